"""What a webhook attempt shows of the receiver (issue #27, findings 5 and 6), through the gateway.

The test platform allows 127.0.0.0/8 the way an operator allows "the database subnet": a receiver there is
reached only through the operator's private allow-list. Its attempt keeps the status and a bounded set of
headers, no body; and a port that is closed, one that accepts and closes, and one that listens and never
answers read alike — code, text and duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import Api, free_port
from tests.e2e.test_webhooks import attempts_of, webhook

BIG = 64 * 1024


@pytest.fixture
async def talkative() -> AsyncIterator[dict[str, Any]]:
    """A receiver on 127.0.0.1 answering 200 with a 64 KiB body (what the RabbitMQ management API would
    answer a read-SSRF) and headers of which only content-type is worth keeping."""
    state: dict[str, Any] = {"served": 0}

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        state["served"] += 1
        return web.Response(status=200, body=b'{"users":"' + b"u" * BIG + b'"}', content_type="application/json",
                            headers={"Set-Cookie": "session=internal", "Server": "RabbitMQ/3.13.7 internal",
                                     "X-Internal": "x" * 500})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/api/users"
    yield state
    await runner.cleanup()


async def test_a_private_receivers_body_is_not_kept_its_status_and_content_type_are(
        api: Api, talkative: dict[str, Any]) -> None:
    hook = await webhook(api, talkative["url"])
    await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
    (delivery,) = await attempts_of(api, hook, 1)
    (attempt,) = delivery["attempts"]
    assert attempt["response_status"] == 200 and attempt["error_code"] is None
    assert attempt["response_body"] is None, len(attempt["response_body"] or "")
    assert attempt["response_headers"] == {"content-type": "application/json"}
    assert "users" not in str(delivery) and "RabbitMQ" not in str(delivery) and "session=" not in str(delivery)


@contextlib.asynccontextmanager
async def three_ports() -> AsyncIterator[dict[str, str]]:
    """URLs on 127.0.0.1 of: a closed port, a listening socket that never answers, and a server that accepts
    and closes at once (EOF)."""
    closed = free_port()  # bound and closed: nothing listens there
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel completes the handshake; nobody ever reads or answers

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    eof = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield {"closed": f"http://127.0.0.1:{closed}/hook",
               "silent": f"http://127.0.0.1:{silent.getsockname()[1]}/hook",
               "eof": f"http://127.0.0.1:{eof.sockets[0].getsockname()[1]}/hook"}
    finally:
        silent.close()
        eof.close()
        await eof.wait_closed()


async def test_closed_silent_and_hung_up_ports_read_alike(api: Api) -> None:
    async with three_ports() as urls:
        hooks = {kind: await webhook(api, url) for kind, url in urls.items()}
        for hook in hooks.values():
            await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
        firsts = {}
        for kind, hook in hooks.items():
            (delivery,) = await attempts_of(api, hook, 1, timeout=15)
            first = delivery["attempts"][0]
            firsts[kind] = (first["response_status"], first["error_code"], first["response_body"],
                            first.get("response_headers"), first["duration_ms"])
    # the test platform's COFFER_WEBHOOK_TIMEOUT is 1 s: every one of them takes it
    assert set(firsts.values()) == {(None, "webhook_delivery_failed", "could not connect", None, 1000)}, firsts
