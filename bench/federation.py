"""The federation scenario of ``make bench``: a read through a ``coffer`` backend beside a local read.

The backend is the same stack seen as another tenant (a second tenant, a reader identity in it,
100 secrets there), mounted at ``fed``: each federated read is a read at the gateway, a hop to the
secrets service, an HTTP read of the other tenant through the gateway again, and back. Both rows run
at 32 clients in the same run, one after the other.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Wrk = Callable[..., Awaitable[dict[str, Any]]]


async def _ok(resp: aiohttp.ClientResponse, *expected: int) -> Any:
    body = await resp.json()
    assert resp.status in expected, body
    return body


async def federation_setup(session: aiohttp.ClientSession, url: str, auth: dict[str, str]) -> list[str]:
    """The other tenant, its reader, its 100 secrets and the mount: the federated read paths."""
    async with session.post(f"{url}/v1/tenants", headers=auth, json={"name": "bench-upstream"}) as r:
        tenant = await _ok(r, 201)
    there = {**auth, "X-Tenant-ID": tenant["id"]}
    async with session.post(f"{url}/v1/identities", headers=there, json={
            "name": "bench-reader", "kind": "service", "allowed_scopes": ["secrets:read", "secrets:write"]}) as r:
        reader = await _ok(r, 201)
    async with session.post(f"{url}/v1/policies", headers=there, json={"name": "bench-rw", "rules": [
            {"effect": "allow", "paths": ["secrets/**"], "capabilities": ["read", "list", "write"]}]}) as r:
        await _ok(r, 201)
    async with session.post(f"{url}/v1/bindings", headers=there,
                            json={"policy": "bench-rw", "identity_id": reader["id"]}) as r:
        await _ok(r, 201)
    async with session.post(f"{url}/v1/auth/token", json={"client_id": reader["client_id"],
                                                          "client_secret": reader["client_secret"]}) as r:
        token = (await _ok(r, 200))["access_token"]
    for i in range(100):
        async with session.put(f"{url}/v1/secrets/shared/k{i}", headers={"Authorization": f"Bearer {token}"},
                               json={"value": secrets.token_hex(16)}) as r:
            await _ok(r, 201)
    async with session.post(f"{url}/v1/federation/backends", headers=auth, json={
            "name": "bench-fed", "type": "coffer", "mount_path": "fed",
            "config": {"url": url, "client_id": reader["client_id"], "client_secret": reader["client_secret"]}}) as r:
        await _ok(r, 201)
    return [f"/v1/secrets/fed/shared/k{i}" for i in range(100)]


async def federation_rows(mode: str, url: str, auth: dict[str, str], session: aiohttp.ClientSession,
                          local: list[str], duration: float, warmup: float, wrk: Wrk) -> list[dict[str, Any]]:
    print(f"bench: {mode}: federated read through a coffer backend, beside a local read, 32 clients ...",
          flush=True)
    federated = await federation_setup(session, url, auth)
    rows = []
    for label, targets in (("federated read (coffer backend), 32 clients", federated),
                           ("local read beside it, 32 clients", local)):
        await wrk(url, auth, "GET", targets, "-", 32, warmup)
        rows.append({"mode": mode, "scenario": label, **await wrk(url, auth, "GET", targets, "-", 32, duration)})
    return rows
