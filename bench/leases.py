"""The lease scenarios of ``make bench``: PostgreSQL credentials made and revoked, and expiry's delay.

The target is the ``coffer_leases`` cluster ``.ci/lease-targets`` creates
(127.0.0.1:5433, SCRAM password authentication), with an admin role made for
the run and dropped after it. One operation is a ``:credentials`` (a role
with ``LOGIN PASSWORD … VALID UNTIL``) followed by that lease's ``:revoke``
(sessions ended, owned objects reassigned and dropped, role dropped), each
through the gateway. Its limit (bench/limits.py ``pg-roles``) is the same
``CREATE ROLE … LOGIN PASSWORD`` + ``DROP ROLE`` issued straight by asyncpg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import asyncpg

from bench.procs import run_json
from bench.settle import settle

LEASE_PG = os.environ.get("COFFER_BENCH_LEASE_PG", "postgresql://postgres:coffer-leases-test@127.0.0.1:5433/postgres")
CREATE = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"


@contextlib.asynccontextmanager
async def pg_admin() -> AsyncIterator[str]:
    """An admin role on the lease cluster for the run: its connection URL."""
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    user, password = f"coffer_bench_{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    await conn.execute(f"CREATE ROLE {user} LOGIN CREATEROLE PASSWORD '{password}'")
    await conn.execute(f"GRANT pg_signal_backend TO {user}")
    host = LEASE_PG.split("@", 1)[1].split("/", 1)[0]
    try:
        yield f"postgresql://{user}:{password}@{host}/postgres"
    finally:
        for row in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-bench-%'"
                                    " OR rolname LIKE 'limit\\_%'"):
            await conn.execute(f'DROP ROLE "{row[0]}"')
        await conn.execute(f"DROP OWNED BY {user}")
        await conn.execute(f"DROP ROLE {user}")
        await conn.close()


async def lease_setup(session: aiohttp.ClientSession, url: str, auth: dict[str, str], admin_url: str) -> None:
    async with session.post(f"{url}/v1/engines", headers=auth, json={
            "name": "bench-pg", "type": "postgresql", "config": {"connection_url": admin_url}}) as r:
        assert r.status == 201, await r.text()
    for role, ttl in (("bench", "1h"), ("bench-expiry", "2s")):
        async with session.put(f"{url}/v1/engines/bench-pg/roles/{role}", headers=auth, json={
                "creation_statements": [CREATE], "default_ttl": ttl}) as r:
            assert r.status == 201, await r.text()


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2)}


async def credentials_cycle(session: aiohttp.ClientSession, url: str, auth: dict[str, str], clients: int,
                            duration: float) -> dict[str, Any]:
    """``clients`` loops of credentials + revoke for ``duration`` s: pairs/s, and each pair's latency."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def client() -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            async with session.post(f"{url}/v1/engines/bench-pg/roles/bench:credentials", headers=auth,
                                    json={}) as r:
                lease = await r.json()
            if r.status != 201:
                errors += 1
                continue
            async with session.post(f"{url}/v1/leases/{lease['lease_id']}:revoke", headers=auth) as r:
                await r.read()
            if r.status != 204:
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return _summary(latencies, errors, time.monotonic() - started)


async def expiry_delay(session: aiohttp.ClientSession, url: str, auth: dict[str, str], leases: int = 20,
                       timeout: float = 60) -> dict[str, Any]:
    """``leases`` leases of 2 s at once; for each, the time from its ``expires_at`` to the moment the API
    shows it ``expired`` (the user gone from PostgreSQL: it is marked so only after), polled every 50 ms."""
    made = []
    for _ in range(leases):
        async with session.post(f"{url}/v1/engines/bench-pg/roles/bench-expiry:credentials", headers=auth,
                                json={}) as r:
            assert r.status == 201, await r.text()
            made.append(await r.json())
    delays: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(delays) < len(made) and time.monotonic() < deadline:
        for lease in made:
            if lease["lease_id"] in delays:
                continue
            async with session.get(f"{url}/v1/leases/{lease['lease_id']}", headers=auth) as r:
                status = (await r.json())["status"]
            if status == "expired":
                expires = datetime.fromisoformat(lease["expires_at"]).timestamp()
                delays[lease["lease_id"]] = (time.time() - expires) * 1000
        await asyncio.sleep(0.05)
    values = sorted(delays.values())
    return {"scenario": f"lease expiry → user removed ({leases} leases)", "requests": len(values),
            "errors": leases - len(values), "rps": None,
            "p50_ms": round(statistics.median(values), 1) if values else None,
            "p95_ms": round(values[int(0.95 * (len(values) - 1))], 1) if values else None,
            "p99_ms": round(values[-1], 1) if values else None}


async def lease_rows(mode: str, url: str, auth: dict[str, str], session: aiohttp.ClientSession,
                 args: argparse.Namespace, dsn: str, vhost: str | None) -> list[dict[str, Any]]:
    """PostgreSQL credentials + revoke at 8 clients beside the same CREATE/DROP ROLE by asyncpg alone, and
    the delay from a lease's expiry to its user's removal."""
    rows = []
    async with pg_admin() as admin_url:
        await lease_setup(session, url, auth, admin_url)
        await settle(dsn, mode, vhost)
        print(f"bench: {mode}: PG credentials + revoke: warm-up {args.warmup:.0f}s, then {args.duration:.0f}s "
              "at 8 clients ...", flush=True)
        await credentials_cycle(session, url, auth, 8, args.warmup)
        rows.append({"mode": mode, "scenario": "PG credentials + revoke (8 clients)",
                     **await credentials_cycle(session, url, auth, 8, args.duration)})
        print(f"bench: {mode}: lease expiry to revocation, 20 leases of 2s ...", flush=True)
        rows.append({"mode": mode, **await expiry_delay(session, url, auth)})
        print(f"bench: {mode}: limit: CREATE ROLE + DROP ROLE by asyncpg alone, 8 connections ...", flush=True)
        limit = await run_json(sys.executable, "-m", "bench.limits", "pg-roles", "--dsn", admin_url,
                               "--duration", str(args.duration), "--clients", "8")
        rows.append({"mode": mode, "scenario": "limit: PG CREATE ROLE + DROP ROLE, asyncpg alone", **limit})
        print(f"bench: {mode}: the same through the lease service's PostgreSQL engine alone ...", flush=True)
        engine = await run_json(sys.executable, "-m", "bench.limits", "pg-engine", "--dsn", admin_url,
                                "--duration", str(args.duration), "--clients", "8")
        rows.append({"mode": mode, "scenario": "PG engine alone: create + revoke, no HTTP/bus/bookkeeping",
                     **engine})
    return rows
