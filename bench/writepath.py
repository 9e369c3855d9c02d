"""What one secret write costs PostgreSQL, end to end: ``python -m bench.writepath [--writes 200]``.

The whole platform in this process (embedded), on a database of its own; ``--writes`` secret writes one
after another through the gateway (one client, so no two share a group commit), then the outbox relay
and the consumers are given time to finish. Counted from PostgreSQL's own statistics, the idle
background of the same length measured first and taken off:

- transactions committed in the platform's database (``pg_stat_database.xact_commit``: read-only ones
  count too),
- WAL flushes to disk (``pg_stat_wal.wal_sync``: the fsyncs a commit waits for),
- WAL records and bytes (``pg_stat_wal``).

The WAL counters are the cluster's: run it on a quiet machine, with enough writes to drown the
rest. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

from services.platform import Platform
from shared.logging import configure

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def counters(conn: asyncpg.Connection, db: str) -> dict[str, float]:
    wal = await conn.fetchrow("SELECT wal_sync, wal_records, wal_bytes FROM pg_stat_wal")
    commits = await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", db)
    return {"commits": float(commits), "wal_syncs": float(wal["wal_sync"]), "wal_records": float(wal["wal_records"]),
            "wal_bytes": float(wal["wal_bytes"])}


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before[k] for k in after}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds for the relay and consumers")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle background measured first")
    args = parser.parse_args()
    configure("warning")
    db = f"coffer_writepath_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            platform = Platform({"http_port": 0, "data_dir": Path(tmp), "database_url": dsn, "log_level": "warning",
                                 "rate_limits": "read=1000000/s,write=1000000/s,auth=1000000/s,pki=1000000/s"},
                                dsn, name="writepath")
            await platform.start()
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.post(f"{platform.url}/v1/sys/init") as r:
                        auth = {"Authorization": f"Bearer {(await r.json())['token']}"}
                    for i in range(20):  # warm-up: caches, prepared statements, the first audit chain
                        async with http.put(f"{platform.url}/v1/secrets/warm/k{i}", json={"value": "v"},
                                            headers=auth) as r:
                            assert r.status == 201, await r.text()
                    await asyncio.sleep(args.settle)
                    # the background (sweeps, relay polls), per second, over an idle span
                    base0 = await counters(admin, db)
                    await asyncio.sleep(args.idle)
                    base1 = await counters(admin, db)
                    started = time.perf_counter()
                    before = await counters(admin, db)
                    for i in range(args.writes):
                        async with http.put(f"{platform.url}/v1/secrets/bench/w{i}", json={"value": "v" * 32},
                                            headers=auth) as r:
                            assert r.status == 201, await r.text()
                    elapsed = time.perf_counter() - started
                    await asyncio.sleep(args.settle)
                    after = await counters(admin, db)
            finally:
                await platform.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
    background = delta(base1, base0)
    spent = delta(after, before)
    window = elapsed + args.settle
    per_write = {k: round((spent[k] - background[k] / args.idle * window) / args.writes, 2) for k in spent}
    print(json.dumps({"writes": args.writes, "seconds": round(elapsed, 2), "per_write": per_write,
                      "background_per_second": {k: round(v / args.idle, 2) for k, v in background.items()}}))


if __name__ == "__main__":
    asyncio.run(main())
