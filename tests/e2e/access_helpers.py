"""Helpers of the access-request tests (api.md §14): requestable policies, people who ask and decide."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from tests.conftest import Api
from tests.e2e.iam_helpers import allow, identity, name


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
    """An identity whose only power is ``approve`` on ``policies`` (no scope of note: deciding needs none)."""
    return await identity(api, ["secrets:read"], [allow([f"policies/{p}" for p in policies], ["approve"])],
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
