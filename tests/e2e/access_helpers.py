"""Helpers of the access-request tests (api.md §14): requestable policies, people who ask and decide."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from standardwebhooks import Webhook

from tests.conftest import ROOT, Api
from tests.e2e.iam_helpers import allow, identity, name
from tests.integration.test_bus_contract import wait_until


async def requestable(api: Api, paths: list[str], caps: list[str] | None = None, *, headers: Any = None,
                      **request: Any) -> str:
    """A policy allowing ``caps`` (read, list) on ``paths`` that can be asked for (``request`` defaults:
    max 1h, one approval)."""
    policy = name("jit")
    status, body, _ = await api.request("POST", "/v1/policies", headers=headers or {}, json={
        "name": policy, "rules": [allow(paths, caps or ["read", "list"])],
        "request": {"max_duration": "1h", "approvals": 1, **request}})
    assert status == 201, body
    return policy


async def approver(api: Api, policies: list[str], *, tenant: str | None = None) -> dict[str, Any]:
    """An identity whose only power is ``approve`` on ``policies`` (deciding needs a token with ``admin``)."""
    return await identity(api, ["admin"], [allow([f"policies/{p}" for p in policies], ["approve"])],
                          tenant=tenant)


async def ask(api: Api, token: str, policy: str, duration: str = "1h", reason: str = "incident 42",
              **extra: Any) -> tuple[int, Any, Any]:
    return await api.request("POST", "/v1/access-requests", token=token, headers=extra.pop("headers", {}),
                             json={"policy": policy, "duration": duration, "reason": reason, **extra})


async def asked(api: Api, token: str, policy: str, duration: str = "1h") -> dict[str, Any]:
    status, body, _ = await ask(api, token, policy, duration)
    assert status == 201, body
    return dict(body)


async def act(api: Api, token: str, request_id: str, action: str, comment: str | None = None,
              headers: Any = None) -> tuple[int, Any, Any]:
    body = {"comment": comment} if comment is not None else {}
    return await api.request("POST", f"/v1/access-requests/{request_id}:{action}", token=token, json=body,
                             headers=headers or {})


async def acted(api: Api, token: str, request_id: str, action: str, comment: str | None = None) -> dict[str, Any]:
    status, body, _ = await act(api, token, request_id, action, comment)
    assert status == 200, body
    return dict(body)


def moment(text: str) -> float:
    """An RFC 3339 answer time as a Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def refused_at(api: Api, token: str, path: str, until: float) -> tuple[float, float]:
    """Read ``path`` every 20 ms until refused: (send time of the last success, time the first refusal came
    back), Unix times. Fails if it still answers at ``until``."""
    last_ok = 0.0
    while True:
        sent = time.time()
        status, body, _ = await api.request("GET", f"/v1/secrets/{path}", token=token)
        if status == 403:
            assert body["error"]["code"] == "access_denied", body
            return last_ok, time.time()
        assert status == 200, body
        last_ok = sent
        assert time.time() < until, "still allowed"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def readme_receiver(folder: Path, port: int, chat_url: str, secret: str,
                          http: aiohttp.ClientSession) -> AsyncIterator[None]:
    """README.md's access.* receiver (its "Just-in-time access" python block, as written) on ``port``, once it
    listens and refuses what Coffer did not sign."""
    section = (ROOT / "README.md").read_text().split("## Just-in-time access", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
    assert code, "README.md's Just-in-time access has no python receiver"
    (folder / "receiver.py").write_text(code.group(1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(folder / "receiver.py"), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PORT": str(port), "CHAT_WEBHOOK_URL": chat_url, "COFFER_WEBHOOK_SECRET": secret})
    try:
        forged = {"webhook-id": "x", "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,Zm9v"}
        while True:
            try:
                async with http.post(f"http://127.0.0.1:{port}/coffer", data=b"{}", headers=forged) as answer:
                    assert answer.status == 401
                    break
            except aiohttp.ClientConnectionError:
                assert proc.returncode is None, "the README's receiver exited"
                await asyncio.sleep(0.1)
        yield
    finally:
        proc.terminate()
        await proc.wait()


async def events_of(hooked: dict[str, Any], request_id: str, *types: str) -> dict[str, dict[str, Any]]:
    """The ``access.*`` events about ``request_id`` the receiver got, by type (signatures checked), once it
    has one of each of ``types`` (deliveries may come in any order)."""
    def found() -> dict[str, dict[str, Any]]:
        events = [Webhook(hooked["secret"]).verify(r.body, r.headers) for r in hooked["receiver"].requests]
        return {e["type"]: e for e in events if e["data"].get("id") == request_id}
    await wait_until(lambda: set(types) <= set(found()), timeout=15)
    return found()


async def audited(api: Api, request_id: str, timeout: float = 10) -> set[str]:
    """The actions of the audit entries about ``request_id`` once the sweeper's is among them."""
    deadline = time.monotonic() + timeout
    while True:
        _, log, _ = await api.request("GET", f"/v1/audit/events?path_prefix=access-requests/{request_id}")
        actions = {e["action"] for e in log["items"]}
        if any(a.startswith("access request expired") for a in actions) or time.monotonic() > deadline:
            return actions
        await asyncio.sleep(0.1)
