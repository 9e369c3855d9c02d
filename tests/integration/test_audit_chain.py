"""The audit chain under concurrent group-committed writers (two gateway replicas) on real PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg

from services.gateway.audit.log import AuditLog
from shared.db import create_pool
from shared.db.migrations import migrate

GATEWAY = Path(__file__).resolve().parents[2] / "services" / "gateway" / "migrations"


async def test_two_replicas_writing_two_tenants_keep_both_chains_whole(pg_dsn: str) -> None:
    schema = f"audit_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(pg_dsn)
    await migrate(conn, schema, GATEWAY)
    await conn.close()
    pools = [await create_pool(pg_dsn, schema, max_size=4) for _ in range(2)]
    try:
        replicas = [AuditLog(pool, b"k" * 32) for pool in pools]

        async def request(i: int) -> None:
            await replicas[i % 2].record(
                tenant_id=f"t{i % 3 % 2}", identity_id="id", action="read", resource=f"secrets/s{i}",
                outcome="ok", status=200, client_ip="127.0.0.1", request_id=f"req-{i}",
                sensitive={"value": f"v{i}"} if i % 5 == 0 else None)

        await asyncio.gather(*(request(i) for i in range(400)))
        for tenant in ("t0", "t1"):
            verdict = await replicas[0].verify(tenant)
            assert verdict["ok"], verdict
        counts = dict(await pools[0].fetch("SELECT tenant_id, count(*) FROM audit_log GROUP BY 1"))
        assert counts == {"t0": 267, "t1": 133}
        # every entry links to the one before it: no fork in either chain
        forks = await pools[0].fetchval(
            "SELECT count(*) FROM (SELECT tenant_id, prev_hash FROM audit_log GROUP BY 1, 2 HAVING count(*) > 1) f")
        assert forks == 0
        for r in replicas:
            await r.close()
    finally:
        for pool in pools:
            await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
            break
        for pool in pools:
            await pool.close()
