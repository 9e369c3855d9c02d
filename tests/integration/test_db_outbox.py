"""Migrations, the outbox relay and the inbox on the real PostgreSQL (and RabbitMQ)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.bus import Bus, InProcessBus, RabbitBus
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.db import OutboxRelay, create_pool, inbox, migrate, outbox
from tests.integration.test_bus_contract import wait_until


@pytest.fixture
async def schema_pool(pg_dsn: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    schema = "it_" + secrets.token_hex(4)
    pool = await create_pool(pg_dsn, schema, max_size=12)
    async with pool.acquire() as conn:
        await migrate(conn, schema, None)
    yield schema, pool
    await pool.close()


async def test_replicas_migrating_together_apply_each_file_once(pg_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (id int PRIMARY KEY);")
    (tmp_path / "0002_b.sql").write_text("INSERT INTO a VALUES (1);")
    schema = "mig_" + secrets.token_hex(4)
    conns = [await asyncpg.connect(pg_dsn) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(c, schema, tmp_path) for c in conns))
        assert sorted(v for batch in applied for v in batch) == [
            "service/0001_a.sql", "service/0002_b.sql",
            "shared/0001_outbox_inbox.sql", "shared/0002_sealed_keys.sql", "shared/0003_keyring.sql",
        ]
        assert await conns[0].fetchval(f'SELECT count(*) FROM "{schema}".a') == 1
        assert await migrate(conns[0], schema, tmp_path) == []
    finally:
        for c in conns:
            await c.close()


async def test_a_failing_migration_rolls_back_and_is_retried(pg_dsn: str, tmp_path: Path) -> None:
    schema = "mig_" + secrets.token_hex(4)
    (tmp_path / "0001_bad.sql").write_text("CREATE TABLE ok (id int); SELECT 1/0;")
    conn = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, schema, tmp_path)
        assert not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema=$1 AND table_name='ok')",
            schema)
        (tmp_path / "0001_bad.sql").write_text("CREATE TABLE ok (id int);")
        assert await migrate(conn, schema, tmp_path) == ["service/0001_bad.sql"]
    finally:
        await conn.close()


async def collect(bus: Bus, prefix: str) -> list[Event]:
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await bus.subscribe("c" + secrets.token_hex(4), [f"{prefix}.#"], on)
    return got


async def test_rolled_back_event_is_never_published_committed_one_is(
    schema_pool: tuple[str, asyncpg.Pool],
) -> None:
    schema, pool = schema_pool
    bus = InProcessBus()
    await bus.start()
    prefix = "ob" + secrets.token_hex(3)
    got = await collect(bus, prefix)
    relay = OutboxRelay(pool, bus, schema, poll_interval=0.1)
    await relay.start()
    try:
        rolled = Event(type=f"{prefix}.rolled")
        with pytest.raises(RuntimeError):
            async with pool.acquire() as conn, conn.transaction():
                await outbox.add(conn, rolled, schema=schema)
                raise RuntimeError("the state change failed")
        kept = Event(type=f"{prefix}.kept", tenant_id="ten_1", request_id="req_ob", data={"path": "a/b"})
        async with pool.acquire() as conn, conn.transaction():
            await outbox.add(conn, kept, schema=schema)
        await wait_until(lambda: len(got) >= 1)
        await asyncio.sleep(0.4)
        assert [e.id for e in got] == [kept.id]
        assert got[0].data == {"path": "a/b"} and got[0].request_id == "req_ob"
        assert await relay.backlog() == 0
    finally:
        await relay.close()
        await bus.close()


async def test_two_relays_share_the_outbox_without_double_publishing(
    schema_pool: tuple[str, asyncpg.Pool], amqp_url: str,
) -> None:
    schema, pool = schema_pool
    bus = RabbitBus(amqp_url, name="relay-test")
    await bus.start()
    prefix = "sk" + secrets.token_hex(3)
    got = await collect(bus, prefix)
    events = [Event(type=f"{prefix}.n", data={"n": i}) for i in range(300)]
    async with pool.acquire() as conn, conn.transaction():
        for e in events:
            await outbox.add(conn, e, schema=schema)
    relays = [OutboxRelay(pool, bus, schema, batch=20, poll_interval=0.05) for _ in range(2)]
    for r in relays:
        await r.start()
    try:
        await wait_until(lambda: len(got) >= 300, timeout=30)
        await asyncio.sleep(0.5)
        assert sorted(e.id for e in got) == sorted(e.id for e in events)  # none lost, none twice
    finally:
        for r in relays:
            await r.close()
        await bus.close()


async def test_inbox_claims_an_event_once(schema_pool: tuple[str, asyncpg.Pool]) -> None:
    _, pool = schema_pool
    event_id = Event(type="a.b").id
    async with pool.acquire() as conn:
        results = [await inbox.claim(conn, "webhooks", event_id) for _ in range(3)]
        assert results == [True, False, False]
        assert await inbox.claim(conn, "other-consumer", event_id) is True
