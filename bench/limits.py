"""Reference limits for ``make bench``, each run in its own process(es).

    python -m bench.limits direct-read --dsn DSN --schema S --key-file F --tenant T --duration 10 --clients 64
    python -m bench.limits {rpc-server,bus-server} --amqp URL
    python -m bench.limits {rpc-client,bus-client} --amqp URL --duration 10 --clients 64
    python -m bench.limits pki-issue --key-type ec-p256 --duration 10 --clients 16
    python -m bench.limits {pg-roles,pg-engine} --dsn ADMIN_URL --duration 10 --clients 8

``direct-read`` is what a secret read costs without HTTP and without the bus
(asyncpg fetch + unwrap + AES-GCM decrypt, the secrets repository's own
code). ``rpc-*`` is the raw RPC round trip the issue names as the ceiling:
plain aio-pika between two processes, JSON bodies, direct reply-to, no
publisher confirms, an empty handler. ``pg-roles`` is a lease's credentials + revoke as
bare ``CREATE ROLE … LOGIN PASSWORD`` + ``DROP ROLE``; ``pg-engine`` the same
through the lease service's PostgreSQL engine alone. ``pki-issue`` is what
``:issue`` costs in ``cryptography`` alone (key, leaf, signature, PEM) in
one process's CPU pool. ``bus-*`` is the same round trip
through Coffer's own bus (shared.bus.RabbitBus: context headers, deadlines,
mandatory publishes, the error envelope). All run on uvloop, as the services
do. Each client prints one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from services.secrets.repository import SecretsRepository
from shared.bus import RabbitBus
from shared.context import RequestContext
from shared.crypto import LocalKms
from shared.db import create_pool
from shared.handover import open_service_keyring
from shared.logging import configure
from shared.runtime import install_uvloop


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
    root = LocalKms.load(Path(args.key_file))
    salt = bytes(await pool.fetchval("SELECT value FROM keyring WHERE name = 'salt'"))
    ring = open_service_keyring(root, Path(args.key_file).parent / "keyrings", "secrets", salt)  # as the service
    repo = SecretsRepository(pool, ring, args.schema)
    paths = [r["path"] for r in await pool.fetch(
        "SELECT path FROM secrets WHERE tenant_id = $1 AND starts_with(path, 'bench/app') LIMIT 1000", args.tenant)]

    async def read(i: int, n: int) -> None:
        await repo.get(args.tenant, paths[(i * 7919 + n) % len(paths)], None)

    await _load(args.clients, 1.0, read)  # warm-up
    result = await _load(args.clients, args.duration, read)
    await pool.close()
    return result


async def pki_issue(args: argparse.Namespace) -> dict[str, Any]:
    """What ``:issue`` costs in cryptography alone: a key made, a leaf built and signed by an EC P-256 CA,
    both serialised to PEM — in this process's CPU pool (the threads the pki service uses), no HTTP, no
    bus, no database."""
    from datetime import UTC, datetime, timedelta

    from services.pki import certs, keys
    from services.pki.names import NameRules, check_names
    from shared.cpu import run_cpu

    ca_key = keys.generate("ec-p256")
    now = datetime.now(UTC)
    ca = certs.Issuer(certs.build_ca("Bench CA", ca_key, certs.new_serial(), now, now + timedelta(days=365), None),
                      ca_key, "http://127.0.0.1/v1/pki/cas/ca_bench/crl", "http://127.0.0.1/v1/pki/ocsp")
    names = check_names(NameRules(("bench.test",), True, False, False, False), "svc.bench.test")

    def one() -> tuple[str, str]:
        key = keys.generate(args.key_type)
        cert = certs.build_leaf(key.public_key(), names, certs.new_serial(), now, now + timedelta(days=30),
                                ("server_auth",), ca)
        return keys.to_pem(key), certs.pem(cert)

    async def call(i: int, n: int) -> None:
        await run_cpu(one)

    await _load(args.clients, 1.0, call)
    return await _load(args.clients, args.duration, call)


async def pg_roles(args: argparse.Namespace) -> dict[str, Any]:
    """What a lease's credentials + revoke cost PostgreSQL at least: ``CREATE ROLE … LOGIN PASSWORD`` then
    ``DROP ROLE``, straight from asyncpg on one TLS connection per client (as the engine connects)."""
    import asyncpg

    conns = [await asyncpg.connect(args.dsn, ssl="require") for _ in range(args.clients)]
    tag = secrets.token_hex(3)

    async def call(i: int, n: int) -> None:
        role = f"limit_{tag}_{i}_{n}"
        await conns[i].execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secrets.token_urlsafe(24)}'")
        await conns[i].execute(f"DROP ROLE {role}")

    try:
        await _load(args.clients, 1.0, call)
        tag = secrets.token_hex(3)
        return await _load(args.clients, args.duration, call)
    finally:
        for conn in conns:
            await conn.close()


async def pg_engine(args: argparse.Namespace) -> dict[str, Any]:
    """The lease service's PostgreSQL engine alone (services/lease/engines/postgresql.py: SCRAM verifier,
    creation script, NOLOGIN, sessions ended, owned objects reassigned and dropped, role dropped) on its
    own pool, in one process: no HTTP, no bus, no lease bookkeeping."""
    from datetime import UTC, datetime, timedelta

    from services.lease.engines.base import Limits, Reach
    from services.lease.engines.postgresql import PostgresEngine
    from shared.outbound import OutboundPolicy

    public, secret = PostgresEngine.parse_config({"connection_url": args.dsn})
    engine = PostgresEngine(public, secret, Reach(OutboundPolicy.from_cidrs(("127.0.0.0/8",), True, public=False),
                                                  10.0, args.clients, limits=Limits(postgresql_legacy=True)))
    spec = PostgresEngine.role_spec({"creation_statements": [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"]})
    expires = datetime.now(UTC) + timedelta(hours=1)

    async def call(i: int, n: int) -> None:
        name = f"v-bench-{secrets.token_hex(6)}"
        await engine.create_user(spec, name, secrets.token_urlsafe(24), expires)
        await engine.revoke_user(spec, name)

    try:
        await _load(args.clients, 1.0, call)
        return await _load(args.clients, args.duration, call)
    finally:
        await engine.close()


async def rpc_server(args: argparse.Namespace) -> None:
    """Raw aio-pika: a queue, an empty JSON handler, replies to direct reply-to."""
    conn = await aio_pika.connect(args.amqp)
    channel = await conn.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=args.clients)
    queue = await channel.declare_queue("bench.raw.rpc", auto_delete=True)

    async def on_request(message: AbstractIncomingMessage) -> None:
        json.loads(message.body)
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps({}).encode(), correlation_id=message.correlation_id),
            routing_key=message.reply_to or "")
        await message.ack()

    await queue.consume(on_request)
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.Event().wait()


async def rpc_client(args: argparse.Namespace) -> dict[str, Any]:
    conn = await aio_pika.connect(args.amqp)
    channel = await conn.channel(publisher_confirms=False)
    pending: dict[str, asyncio.Future[bytes]] = {}

    async def on_reply(message: AbstractIncomingMessage) -> None:
        future = pending.pop(message.correlation_id or "", None)
        if future is not None:
            future.set_result(message.body)

    replies = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
    await replies.consume(on_reply, no_ack=True)

    async def call(i: int, n: int) -> None:
        correlation_id = f"{i}.{n}"
        future = pending[correlation_id] = asyncio.get_running_loop().create_future()
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps({}).encode(), correlation_id=correlation_id,
                             reply_to="amq.rabbitmq.reply-to"), routing_key="bench.raw.rpc")
        json.loads(await asyncio.wait_for(future, 10))

    await _load(args.clients, 1.0, call)
    result = await _load(args.clients, args.duration, call)
    await conn.close()
    return result


async def bus_server(args: argparse.Namespace) -> None:
    bus = RabbitBus(args.amqp, name="bench-bus-server", batch_max=args.batch_max)
    await bus.start()

    async def echo(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {}

    await bus.serve("benchecho", {"echo": echo})
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.Event().wait()


async def bus_client(args: argparse.Namespace) -> dict[str, Any]:
    from shared.metrics import RPC_BATCH_ITEMS

    bus = RabbitBus(args.amqp, name="bench-bus-client", batch_max=args.batch_max)
    await bus.start()

    async def call(i: int, n: int) -> None:
        await bus.call("benchecho", "echo", {}, RequestContext())

    def sent() -> tuple[float, float]:
        samples = {s.name: s.value for m in RPC_BATCH_ITEMS.collect() for s in m.samples}
        return samples.get("coffer_rpc_batch_items_count", 0.0), samples.get("coffer_rpc_batch_items_sum", 0.0)

    await _load(args.clients, 1.0, call)
    before = sent()
    result = await _load(args.clients, args.duration, call)
    after = sent()
    await bus.close()
    messages, calls = after[0] - before[0], after[1] - before[1]
    # calls per RPC message: 1 when coalescing is off (a batch of one is a plain request)
    result["calls_per_message"] = round(calls / messages, 2) if messages else 1.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["direct-read", "rpc-server", "rpc-client", "bus-server", "bus-client",
                                         "pki-issue", "pg-roles", "pg-engine"])
    parser.add_argument("--key-type", default="ec-p256")
    parser.add_argument("--batch-max", type=int, default=64, help="RPC coalescing cap (1: off)")
    parser.add_argument("--dsn")
    parser.add_argument("--schema", default="secrets")
    parser.add_argument("--key-file")
    parser.add_argument("--tenant")
    parser.add_argument("--amqp")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=64)
    args = parser.parse_args()
    configure("warning")  # logs to stderr: stdout carries only the results
    install_uvloop()
    if args.what.endswith("-server"):
        asyncio.run(rpc_server(args) if args.what == "rpc-server" else bus_server(args))
        return
    clients = {"direct-read": direct_read, "rpc-client": rpc_client, "bus-client": bus_client, "pki-issue": pki_issue,
               "pg-roles": pg_roles, "pg-engine": pg_engine}
    result = asyncio.run(clients[args.what](args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
