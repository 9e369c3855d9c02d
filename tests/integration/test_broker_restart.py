"""RabbitMQ restarted under load: calls resume, none hangs, the outbox catches up; RPC is at-most-once.

These stop and start the local broker's application (``rabbitmqctl
stop_app`` / ``start_app``), which closes every connection with
CONNECTION_FORCED, as a broker restart does.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shared.bus import RabbitBus
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.db import OutboxRelay, create_pool, migrate, outbox
from shared.errors import ServiceUnavailable
from tests.conftest import rabbitmqctl
from tests.integration.test_bus_contract import wait_until, wait_until_async

pytestmark = [pytest.mark.broker_restart, pytest.mark.long]


async def ctl(*args: str) -> None:
    await asyncio.get_running_loop().run_in_executor(None, lambda: rabbitmqctl(*args))


@pytest.fixture
async def broker_guard() -> AsyncIterator[None]:
    """Whatever happens in the test, the broker is running again afterwards."""
    yield
    await ctl("start_app")
    await ctl("await_startup")


async def test_rpc_and_events_resume_after_broker_restart(amqp_url: str, broker_guard: None) -> None:
    server = RabbitBus(amqp_url, name="restart-server", rpc_timeout=2.0)
    client = RabbitBus(amqp_url, name="restart-client", rpc_timeout=2.0)
    await server.start()
    await client.start()
    service, prefix = "r" + secrets.token_hex(3), "rs" + secrets.token_hex(3)
    events: list[str] = []

    async def echo(payload: dict[str, Any], ctx: RequestContext) -> Any:
        return payload["n"]

    async def on_event(event: Event, ctx: RequestContext) -> None:
        events.append(event.id)

    await server.serve(service, {"echo": echo})
    await server.subscribe("restart-consumer" + prefix, [f"{prefix}.*"], on_event)

    outcomes: list[tuple[float, float, str]] = []  # (started, took, outcome)
    stop = asyncio.Event()

    async def traffic(worker: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                assert await client.call(service, "echo", {"n": n}, RequestContext()) == n
                outcome = "ok"
            except ServiceUnavailable:
                outcome = "unavailable"
            outcomes.append((started, time.monotonic() - started, outcome))
            await asyncio.sleep(0.01 if outcome == "ok" else 0.1)

    workers = [asyncio.create_task(traffic(i)) for i in range(8)]
    try:
        await asyncio.sleep(1.0)
        await ctl("stop_app")
        await asyncio.sleep(1.5)
        await ctl("start_app")
        back_at = time.monotonic()
        await wait_until(lambda: any(s > back_at and o == "ok" for s, _, o in outcomes), timeout=10)
        resumed_after = min(s for s, _, o in outcomes if s > back_at and o == "ok") - back_at
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*workers)
    try:
        assert resumed_after < 10
        assert max(took for _, took, _ in outcomes) < 2.0 + 0.5, "a call outlived its timeout"
        assert {o for _, _, o in outcomes} == {"ok", "unavailable"}
        assert outcomes[-1][2] == "ok"
        assert server.reconnects >= 1 and client.reconnects >= 1
        assert not client._pending, "a reply future was left behind"
        # the event consumer was declared again on the new connection
        event = Event(type=f"{prefix}.after")
        await client.publish(event)
        await wait_until(lambda: event.id in events, timeout=10)
    finally:
        await client.close()
        await server.close()


async def test_event_written_while_broker_is_down_is_published_when_it_returns(
    amqp_url: str, pg_dsn: str, broker_guard: None, tmp_path: Path
) -> None:
    schema = "down_" + secrets.token_hex(3)
    pool = await create_pool(pg_dsn, schema)
    async with pool.acquire() as conn:
        await migrate(conn, schema, None)
    bus = RabbitBus(amqp_url, name="outbox-writer", publish_timeout=1.0)
    consumer_bus = RabbitBus(amqp_url, name="outbox-reader")
    await bus.start()
    await consumer_bus.start()
    got: list[str] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event.id)

    prefix = "dn" + secrets.token_hex(3)
    await consumer_bus.subscribe("down-consumer" + prefix, [f"{prefix}.#"], on)
    relay = OutboxRelay(pool, bus, schema, poll_interval=0.2)
    await relay.start()
    try:
        await ctl("stop_app")
        event = Event(type=f"{prefix}.written", data={"path": "a"})
        async with pool.acquire() as conn, conn.transaction():  # the state change commits
            await outbox.add(conn, event, schema=schema)
        await asyncio.sleep(2.0)
        assert got == [] and await relay.backlog() == 1  # nothing lost, nothing sent yet
        await ctl("start_app")
        await wait_until(lambda: event.id in got, timeout=20)
        await wait_until_async(relay.backlog, 0)  # marked sent once confirmed
    finally:
        await relay.close()
        await bus.close()
        await consumer_bus.close()
        await pool.close()


async def test_a_request_whose_server_dies_mid_call_is_not_run_again(amqp_url: str) -> None:
    """RPC is at-most-once: a replica that dies while handling a request doesn't hand it to the next one.

    (With acks, the broker would redeliver it to the second replica and a write
    could happen twice while its caller had already given up.)
    """
    name = f"amo{secrets.token_hex(3)}"
    runs: list[str] = []
    started = asyncio.Event()

    async def first(payload: dict[str, Any], ctx: RequestContext) -> Any:
        runs.append("first")
        started.set()
        await asyncio.sleep(30)

    async def second(payload: dict[str, Any], ctx: RequestContext) -> Any:
        runs.append("second")
        return "done"

    server1, server2 = RabbitBus(amqp_url, name="amo-1"), RabbitBus(amqp_url, name="amo-2")
    client = RabbitBus(amqp_url, name="amo-client", rpc_timeout=2.0)
    await server1.start()
    await client.start()
    try:
        await server1.serve(name, {"write": first})
        call = asyncio.create_task(client.call(name, "write", {}, RequestContext()))
        await asyncio.wait_for(started.wait(), 5)
        await server1.close()  # dies mid-call
        await server2.start()
        await server2.serve(name, {"write": second})
        with pytest.raises(ServiceUnavailable):
            await call
        await asyncio.sleep(0.5)
        assert runs == ["first"]
        assert await client.call(name, "write", {}, RequestContext()) == "done"  # the next call is served
    finally:
        for b in (client, server2, server1):
            await b.close()


async def test_handlers_run_at_most_prefetch_at_a_time(amqp_url: str) -> None:
    name = f"slots{secrets.token_hex(3)}"
    server = RabbitBus(amqp_url, name="slots-server", prefetch=3)
    client = RabbitBus(amqp_url, name="slots-client")
    running = peak = 0

    async def work(payload: dict[str, Any], ctx: RequestContext) -> Any:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return payload["i"]

    await server.start()
    await client.start()
    try:
        await server.serve(name, {"work": work})
        results = await asyncio.gather(*(client.call(name, "work", {"i": i}, RequestContext()) for i in range(12)))
        assert results == list(range(12)) and peak == 3
    finally:
        await client.close()
        await server.close()


async def test_a_saturated_service_does_not_take_the_slots_of_another_on_the_same_bus(amqp_url: str) -> None:
    busy, free = f"busy{secrets.token_hex(3)}", f"free{secrets.token_hex(3)}"
    server = RabbitBus(amqp_url, name="slots2-server", prefetch=2)
    client = RabbitBus(amqp_url, name="slots2-client", rpc_timeout=3.0)
    release = asyncio.Event()

    async def stuck(payload: dict[str, Any], ctx: RequestContext) -> Any:
        await release.wait()
        return "late"

    async def quick(payload: dict[str, Any], ctx: RequestContext) -> Any:
        return "quick"

    await server.start()
    await client.start()
    try:
        await server.serve(busy, {"stuck": stuck})
        await server.serve(free, {"quick": quick})
        stuck_calls = [asyncio.create_task(client.call(busy, "stuck", {}, RequestContext())) for _ in range(4)]
        await asyncio.sleep(0.2)
        assert await client.call(free, "quick", {}, RequestContext(), timeout=1.0) == "quick"
        release.set()
        assert await asyncio.gather(*stuck_calls) == ["late"] * 4
    finally:
        await client.close()
        await server.close()
