"""The outbox relay's throughput: ``N`` outbox rows to confirmed events, with the batch published at once
(``Bus.publish_many``, what the relay does) beside the same batches published one event at a time (each
confirm awaited before the next: what it did before).

``python -m bench.relay --events 5000`` (``make bench`` runs it): a database and a vhost of its own,
rows inserted by ``outbox.add`` in one transaction, then ``OutboxRelay.run_once`` until every row is
sent; prints one JSON line per way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import time
from typing import Any

import asyncpg

from shared.bus import Bus, RabbitBus
from shared.contracts.events import Event
from shared.db import outbox
from shared.db.migrations import migrate
from shared.db.pool import create_pool

PG_ADMIN = os.environ.get("COFFER_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("COFFER_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672")


class OneByOne(RabbitBus):
    """The bus as the relay used it before: each event's confirm awaited before the next is sent."""

    async def publish_many(self, events: Any) -> Any:
        return await Bus.publish_many(self, events)


async def measure(dsn: str, amqp: str, events: int, bus_class: type[RabbitBus]) -> dict[str, Any]:
    schema = f"relay_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(dsn)
    await migrate(admin, schema, None)
    await admin.close()
    pool = await create_pool(dsn, schema)
    bus = bus_class(amqp, name=f"bench-relay-{secrets.token_hex(3)}")
    await bus.start()
    received = 0
    all_in = asyncio.Event()

    async def sink(event: Event, ctx: Any) -> None:
        nonlocal received
        received += 1
        if received >= events:
            all_in.set()

    # a consumer's quorum queue, as every event type has one in a running platform (else RabbitMQ
    # returns each unroutable message, which costs more than the publish)
    await bus.subscribe(f"bench-sink-{schema}", ["bench.#"], sink)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for i in range(events):
                await outbox.add(conn, Event(type="bench.relayed", tenant_id="t", data={"i": i}), schema=schema)
        relay = outbox.OutboxRelay(pool, bus, schema, batch=100)
        started = time.perf_counter()
        done = 0
        while done < events:
            done += await relay.run_once()
        elapsed = time.perf_counter() - started
        async with asyncio.timeout(60):
            await all_in.wait()  # every event reached the consumer
        return {"events": events, "seconds": round(elapsed, 3), "rps": round(events / elapsed, 1)}
    finally:
        await bus.close()
        await pool.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    tag = secrets.token_hex(3)
    db, vhost = f"coffer_bench_relay_{tag}", f"coffer_bench_relay_{tag}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                   capture_output=True)
    try:
        dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
        for label, cls in (("batched", RabbitBus), ("one by one", OneByOne)):
            row = await measure(dsn, f"{AMQP}/{vhost}", args.events, cls)
            print(json.dumps({"way": label, **row}), flush=True)
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
