"""After a restore, three checks, each said as it is made:

1. counts: every table's rows, in all and per tenant, are the manifest's (the same queries made them);
2. audit: each tenant's chain verifies with the gateway's own code (``AuditLog.verify``: every link and
   hash) and ends at the manifest's head;
3. secrets: a sample of them (the newest live version of a few secrets of each tenant, in turns) is read
   through the secrets service of a platform started on the restored installation — its keyring opened
   with the restored seal, as any start opens it — and each must decrypt; a tenant deleted after the
   backup must answer ``encryption_error``. No value is printed or logged: only whether it opened.

The platform is the secrets service alone, in process, without a broker and without the gateway, the
webhooks, lease and PKI services: no delivery, lease revocation or ACME renewal runs from a check. The
secrets service's due jobs (retention purge, scheduled rotations) run as at any start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.admin import catalog
from services.admin.manifest import Manifest
from services.gateway.audit.log import AuditLog
from services.platform import Platform
from shared.config import Settings
from shared.context import RequestContext
from shared.crypto import LocalKms
from shared.db import create_pool
from shared.errors import CofferError
from shared.registry import rpc_name

_SAMPLE = (
    "SELECT tenant_id, path, version FROM ("
    " SELECT v.tenant_id, v.path, v.version,"
    "  row_number() OVER (PARTITION BY v.tenant_id ORDER BY v.path) AS turn"
    " FROM secret_versions v JOIN secrets s USING (tenant_id, path)"
    " WHERE v.version = s.current_version AND s.deleted_at IS NULL AND v.deleted_at IS NULL"
    " AND v.destroyed_at IS NULL AND (v.expires_at IS NULL OR v.expires_at > now())"
    "  AND ($2::text[] IS NULL OR v.tenant_id = ANY($2::text[]))) AS live"
    " WHERE $2::text[] IS NULL OR turn = 1 ORDER BY turn, tenant_id LIMIT $1")


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    read: int = 0
    refused: int = 0  # deleted tenants' secrets that stayed shut, as they must

    @property
    def ok(self) -> bool:
        return not self.problems


async def counts(conn: Any, settings: Settings, manifest: Manifest, verdict: Verdict) -> None:
    found = await catalog.counts(conn, await catalog.tables(conn, settings))
    for key, expected in manifest.tables.items():
        got = found.get(key)
        if got is None or got["rows"] != expected.rows or got.get("tenants") != expected.tenants:
            verdict.problems.append(f"counts: {key} has {got['rows'] if got else 'no'} rows, the manifest "
                                    f"{expected.rows}" + (" (per tenant differ)" if got and got["rows"] ==
                                                         expected.rows else ""))


async def audit(dsn: str, settings: Settings, manifest: Manifest, verdict: Verdict) -> int:
    """Each tenant's chain verified (the gateway's code); how many entries were checked."""
    pool = await create_pool(dsn, settings.schema_for("gateway"), min_size=1, max_size=1)
    log = AuditLog(pool, b"")  # verify needs no key: the hashes cover the entries, not a secret
    checked = 0
    try:
        for tenant, head in manifest.audit_heads.items():
            result = await log.verify(tenant)
            last = await pool.fetchval("SELECT hash FROM audit_log WHERE tenant_id = $1 AND seq <= $2"
                                       " ORDER BY seq DESC LIMIT 1", tenant, head.seq)
            checked += result["checked"]
            if not result["ok"]:
                verdict.problems.append(f"audit: tenant {tenant}'s chain breaks at seq "
                                        f"{result['first_broken']['seq']}: {result['first_broken']['reason']}")
            elif last is None or bytes(last).hex() != head.hash:
                verdict.problems.append(f"audit: tenant {tenant}'s chain does not end at the manifest's head")
            elif result["checked"] < head.entries:
                verdict.problems.append(f"audit: tenant {tenant} has {result['checked']} entries, the manifest "
                                        f"{head.entries}")
    finally:
        await log.close()
        await pool.close()
    return checked


async def secrets_sample(dsn: str, settings: Settings, kms: LocalKms, size: int, deleted: set[str],
                         verdict: Verdict, say: Callable[[str], None]) -> None:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": settings.schema_for("secrets")})
    try:
        sample = [tuple(r) for r in await conn.fetch(_SAMPLE, size, None)]
        if deleted:  # one of each deleted tenant's, whatever the sample's size
            sample += [tuple(r) for r in await conn.fetch(_SAMPLE, len(deleted), sorted(deleted))
                       if tuple(r) not in sample]
    finally:
        await conn.close()
    if not sample:
        say("verify: no live secret to read back")
        return
    values = {name: getattr(settings, name) for name in type(settings).model_fields}
    values.update(amqp_url=None, bus_users={}, http_port=0, lifecycle_interval=3600.0, export_poll_interval=3600.0)
    platform = Platform(values, dsn, services=("secrets",), kms=kms, name="coffer-restore-check")
    try:
        await platform.start()
        for tenant, path, version in sample:
            ctx = RequestContext(tenant_id=tenant)
            try:
                view = await platform.bus.call(rpc_name("secrets"), "get", {"path": path, "version": version}, ctx)
                opened = isinstance(view, dict) and "value" in view
            except CofferError as exc:
                if tenant in deleted and exc.code == "encryption_error":
                    verdict.refused += 1
                    continue
                verdict.problems.append(f"secrets: tenant {tenant}'s version {version} of a secret did not read "
                                        f"back ({exc.code})")
                continue
            if tenant in deleted:
                verdict.problems.append(f"secrets: tenant {tenant} was deleted after the backup, yet its secret "
                                        "opened")
            elif opened:
                verdict.read += 1
    finally:
        await platform.close()
