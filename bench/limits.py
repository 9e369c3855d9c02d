"""Reference limits for ``make bench``, each run in its own process(es).

    python -m bench.limits direct-read --dsn DSN --schema S --key-file F --tenant T --duration 10 --clients 64
    python -m bench.limits rpc-server --amqp URL
    python -m bench.limits rpc-client --amqp URL --duration 10 --clients 64

``direct-read`` is what a secret read costs without HTTP and without the bus
(asyncpg fetch + unwrap + AES-GCM decrypt, the secrets repository's own
code); ``rpc-*`` is a bare RPC round trip over RabbitMQ (JSON, direct
reply-to, confirms, an empty handler) between two processes. Each prints one
JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from services.secrets.repository import SecretsRepository
from shared.bus import RabbitBus
from shared.context import RequestContext
from shared.crypto import LocalKms
from shared.db import create_pool
from shared.logging import configure


async def _load(clients: int, duration: float, call: Any) -> dict[str, Any]:
    latencies: list[float] = []
    stop_at = time.monotonic() + duration

    async def client(i: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            await call(i, n)
            latencies.append((time.perf_counter() - started) * 1000)
            n += 1

    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "rps": round(len(latencies) / elapsed, 1), "p50_ms": round(q[49], 2),
            "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2), "errors": 0}


async def direct_read(args: argparse.Namespace) -> dict[str, Any]:
    pool = await create_pool(args.dsn, args.schema, max_size=10)
    repo = SecretsRepository(pool, LocalKms.load(Path(args.key_file)), args.schema)
    paths = [r["path"] for r in await pool.fetch(
        "SELECT path FROM secrets WHERE tenant_id = $1 AND starts_with(path, 'bench/app') LIMIT 1000", args.tenant)]

    async def read(i: int, n: int) -> None:
        await repo.get(args.tenant, paths[(i * 7919 + n) % len(paths)], None)

    await _load(args.clients, 1.0, read)  # warm-up
    result = await _load(args.clients, args.duration, read)
    await pool.close()
    return result


async def rpc_server(args: argparse.Namespace) -> None:
    bus = RabbitBus(args.amqp, name="bench-rpc-server")
    await bus.start()

    async def echo(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {}

    await bus.serve("benchecho", {"echo": echo})
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.Event().wait()


async def rpc_client(args: argparse.Namespace) -> dict[str, Any]:
    bus = RabbitBus(args.amqp, name="bench-rpc-client")
    await bus.start()

    async def call(i: int, n: int) -> None:
        await bus.call("benchecho", "echo", {}, RequestContext())

    await _load(args.clients, 1.0, call)
    result = await _load(args.clients, args.duration, call)
    await bus.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["direct-read", "rpc-server", "rpc-client"])
    parser.add_argument("--dsn")
    parser.add_argument("--schema", default="secrets")
    parser.add_argument("--key-file")
    parser.add_argument("--tenant")
    parser.add_argument("--amqp")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    configure("warning")  # logs to stderr: stdout carries only the results
    if args.what == "rpc-server":
        asyncio.run(rpc_server(args))
        return
    result = asyncio.run(direct_read(args) if args.what == "direct-read" else rpc_client(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
