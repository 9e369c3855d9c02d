"""A known set across every service, written through the gateway and checked again after a restore.

Used by ``make backup-drill`` (tests/drill/__main__.py) and by tests/e2e/test_backups.py. Everything goes
through the HTTP API as a user's would; values are remembered (``remember_secret``) so that no log line of
a test run may hold one.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from tests.conftest import Api, remember_secret

REDIS = ("127.0.0.1", 6379)


@dataclass
class Known:
    """What was written: enough to check every piece of it, and never printed whole (values are secrets)."""

    root: str
    kept: str
    doomed: str
    #: (tenant, path) → the value of each version, oldest first
    secrets: dict[tuple[str, str], list[str]] = field(default_factory=dict, repr=False)
    ca: str = ""
    role: str = ""
    serial: str = ""
    webhook: str = ""
    engine: str | None = None
    lease_role: str | None = None
    #: the Redis admin the engine uses (dropped by ``forget_redis_admin``)
    redis_user: str | None = field(default=None, repr=False)


def _tenant(t: str) -> dict[str, str]:
    return {"X-Tenant-ID": t}


async def _ok(api: Api, method: str, path: str, want: int, **kwargs: Any) -> Any:
    status, body, _ = await api.request(method, path, **kwargs)
    assert status == want, (method, path, status, body)
    return body


async def redis_admin() -> tuple[str, str] | None:
    """A Redis ACL user for the lease engine, or None when no Redis answers on 127.0.0.1:6379."""
    try:
        root = aioredis.Redis(host=REDIS[0], port=REDIS[1], decode_responses=True, socket_connect_timeout=1)
        user, password = f"coffer-drill-{secrets.token_hex(4)}", remember_secret(secrets.token_urlsafe(18))
        await root.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
        await root.aclose()
        return user, password
    except (OSError, aioredis.RedisError):
        return None


async def forget_redis_admin(known: Known) -> None:
    if known.redis_user is None:
        return
    root = aioredis.Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    for user in await root.execute_command("ACL", "USERS"):
        if user == known.redis_user or user.startswith("v-"):
            await root.execute_command("ACL", "DELUSER", user)
    await root.aclose()


async def write_known_set(api: Api, root: str, *, lease: bool = True) -> Known:
    """Two tenants (one to delete after the backup) with secrets of three versions; in the root tenant those,
    a value of 60 KB, a CA, a role and a certificate issued by it; a webhook subscription; a Redis lease engine and
    role when Redis answers (the lease service's sealed admin password)."""
    kept = (await _ok(api, "POST", "/v1/tenants", 201, json={"name": f"kept-{secrets.token_hex(3)}"}))["id"]
    doomed = (await _ok(api, "POST", "/v1/tenants", 201, json={"name": f"doomed-{secrets.token_hex(3)}"}))["id"]
    known = Known(root=root, kept=kept, doomed=doomed)
    for tenant in (root, kept, doomed):
        for path in ("app/db/password", "app/api-key"):
            values = [remember_secret(f"drill-{secrets.token_hex(12)}") for _ in range(3)]
            for version, value in enumerate(values, start=1):
                await _ok(api, "PUT", f"/v1/secrets/{path}", 201 if version == 1 else 200, json={"value": value},
                          headers=_tenant(tenant))
            known.secrets[(tenant, path)] = values
    big = remember_secret("drill-big-" + secrets.token_urlsafe(45_000))  # near the 64 KiB a value may have
    await _ok(api, "PUT", "/v1/secrets/app/big", 201, json={"value": big}, headers=_tenant(root))
    known.secrets[(root, "app/big")] = [big]
    known.ca = (await _ok(api, "POST", "/v1/pki/cas", 201, json={
        "name": f"drill-ca-{secrets.token_hex(3)}", "common_name": "Coffer Drill CA", "key_type": "ec-p256",
        "ttl": "8760h"}))["id"]
    known.role = f"drill-{secrets.token_hex(3)}"
    await _ok(api, "PUT", f"/v1/pki/roles/{known.role}", 201, json={
        "ca_id": known.ca, "allowed_domains": ["example.com"], "allow_subdomains": True, "ttl": "24h"})
    cert = await _ok(api, "POST", f"/v1/pki/roles/{known.role}:issue", 201, json={"common_name": "a.example.com"})
    remember_secret(cert["private_key"].strip().splitlines()[1])
    known.serial = cert["serial"]
    hook = await _ok(api, "POST", "/v1/webhooks", 201, json={"url": "http://127.0.0.1:9999/drill"},
                     headers=_tenant(kept))
    remember_secret(hook["secret"])
    known.webhook = hook["id"]
    admin = await redis_admin() if lease else None
    if admin is not None:
        known.redis_user = admin[0]
        known.engine = f"drill-redis-{secrets.token_hex(3)}"
        await _ok(api, "POST", "/v1/engines", 201, json={"name": known.engine, "type": "redis", "config": {
            "host": REDIS[0], "port": REDIS[1], "username": admin[0], "password": admin[1]}})
        known.lease_role = "drill"
        await _ok(api, "PUT", f"/v1/engines/{known.engine}/roles/{known.lease_role}", 201,
                  json={"acl_rules": ["~drill:*", "+get", "+ping"], "default_ttl": "5m"})
    return known


async def keep_writing(api: Api, tenant: str, stop: asyncio.Event, acked: list[int],
                       under_way: asyncio.Event | None = None) -> None:
    """``load/<n>`` = ``load-<n>`` until ``stop``; each number whose write was answered 201 is appended
    (``under_way`` is set after 20 of them)."""
    n = 0
    while not stop.is_set():
        status, _, _ = await api.request("PUT", f"/v1/secrets/load/{n}", json={"value": f"load-{n}"},
                                         headers=_tenant(tenant))
        if status == 201:
            acked.append(n)
        if under_way is not None and len(acked) >= 20:
            under_way.set()
        n += 1


async def check_known_set(api: Api, known: Known, *, deleted: set[str] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """Every piece of ``known`` read back through the restored platform (a deleted tenant's secrets answer
    ``encryption_error``); one line per service saying what was restored."""
    read = shut = 0
    for (tenant, path), values in known.secrets.items():
        for version, value in enumerate(values, start=1):
            status, body, _ = await api.request("GET", f"/v1/secrets/{path}?version={version}",
                                                headers=_tenant(tenant))
            if tenant in deleted:
                assert status == 500 and body["error"]["code"] == "encryption_error", (status, body)
                shut += 1
            else:
                assert status == 200 and body["value"] == value, (tenant, path, version, status)
                read += 1
    alive = sum(1 for tenant, _ in known.secrets if tenant not in deleted)
    lines = [f"secrets: {read} versions of {alive} secrets read back, each its "
             "own value" + (f"; {shut} of the tenant deleted after the backup answer encryption_error" if shut
                             else "")]
    await _ok(api, "GET", f"/v1/pki/cas/{known.ca}", 200)
    await _ok(api, "GET", f"/v1/pki/certificates/{known.serial}", 200)
    fresh = await _ok(api, "POST", f"/v1/pki/roles/{known.role}:issue", 201, json={"common_name": "b.example.com"})
    remember_secret(fresh["private_key"].strip().splitlines()[1])
    lines.append("pki: the CA, its role and the certificate issued before the backup; the CA's key signs again")
    hook = await _ok(api, "GET", f"/v1/webhooks/{known.webhook}", 200, headers=_tenant(known.kept))
    assert hook["url"] == "http://127.0.0.1:9999/drill", hook
    lines.append("webhooks: the subscription, as it was")
    if known.engine is not None:
        lease = await _ok(api, "POST", f"/v1/engines/{known.engine}/roles/{known.lease_role}:credentials", 201,
                          json={})
        remember_secret(lease["data"]["password"])
        await _ok(api, "POST", f"/v1/leases/{lease['lease_id']}:revoke", 204)
        lines.append("lease: the Redis engine's sealed admin password opens (a lease made at Redis and revoked)")
    else:
        lines.append("lease: skipped (no Redis on 127.0.0.1:6379; .ci/lease-targets starts one)")
    await _ok(api, "PUT", "/v1/secrets/after/restore", 201, json={"value": "written after the restore"})
    lines.append("a new write: accepted (the audit log's and the outbox's bigserials go on past the backup's)")
    verified = await _ok(api, "GET", "/v1/audit/verify", 200)
    assert verified["ok"], verified
    lines.append(f"audit: the root tenant's chain verifies through the restored gateway ({verified['checked']} "
                 "entries, those written since the restore included)")
    return lines
