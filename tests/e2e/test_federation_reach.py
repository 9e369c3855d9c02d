# ruff: noqa: F811  (pytest fixtures imported from test_federation are parameters here)
"""Federation backends that can't be used read alike (issue #27, finding 6), through the gateway in both run
modes: a closed port, one that accepts and closes at once, one that never answers and an HTTP server that
answers 405 — all on 127.0.0.1, reached only through the operator's private allow-list — give one code, one
message and the same details, for a ``coffer`` and an ``aws_secrets_manager`` backend alike. The cause is
in the server's log, not in the answer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from tests.conftest import Api
from tests.e2e.iam_helpers import name
from tests.e2e.test_federation import AWS, api, platform  # noqa: F401
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_webhooks_answers import three_ports


@contextlib.asynccontextmanager
async def method_not_allowed() -> AsyncIterator[str]:
    """An HTTP server that answers every request 405 (as many an internal service would)."""
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"error": "Method Not Allowed", "reason": "internal"}, status=405)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def config(kind: str, url: str) -> dict[str, Any]:
    base = url.removesuffix("/hook")
    if kind == "coffer":
        return {"url": base, "client_id": "c", "client_secret": "s", "timeout": "1s"}
    return {**AWS, "endpoint_url": base, "timeout": "1s"}


async def test_closed_silent_hung_up_and_405_backends_read_alike(api: Api) -> None:
    async with three_ports() as urls, method_not_allowed() as answering:
        urls = {**urls, "405": answering}
        for kind in ("coffer", "aws_secrets_manager"):
            backend = name("fb")  # never made: the same name each time, so the messages can be compared
            seen = {}
            for target, url in urls.items():
                status, body, headers = await api.request("POST", "/v1/federation/backends", json={
                    "name": backend, "type": kind, "mount_path": f"reach/{kind}", "config": config(kind, url)})
                err = assert_envelope(status, body, headers, "backend_error")
                seen[target] = (status, err["code"], err["message"], sorted(err["details"].items()))
            expected = (502, "backend_error", f"could not connect to backend '{backend}'", [("backend", backend)])
            assert all(v == expected for v in seen.values()), (kind, seen)
