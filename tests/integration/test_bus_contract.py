"""The bus contract: every test runs on the in-process bus and on real RabbitMQ."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from shared.bus import Bus
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.errors import (
    CofferError,
    QuotaExceeded,
    SecretNotFound,
    ServiceUnavailable,
    StorageError,
    VersionConflict,
)
from shared.logging import PROCESSORS


def svc() -> str:
    return "t" + secrets.token_hex(4)


async def test_call_returns_result_and_carries_context(bus: Bus) -> None:
    name = svc()
    seen: list[RequestContext] = []

    async def echo(payload: dict[str, Any], ctx: RequestContext) -> Any:
        seen.append(ctx)
        return {"got": payload, "unicode": "ключ 🔑"}

    await bus.serve(name, {"echo": echo})
    ctx = RequestContext(request_id="req_contract", tenant_id="ten_1", identity_id="idn_1",
                         scopes=("admin",))
    result = await bus.call(name, "echo", {"a": [1, 2], "b": None}, ctx)
    assert result == {"got": {"a": [1, 2], "b": None}, "unicode": "ключ 🔑"}
    assert (seen[0].request_id, seen[0].tenant_id, seen[0].identity_id, seen[0].scopes) == (
        "req_contract", "ten_1", "idn_1", ("admin",))
    assert seen[0].deadline is not None and seen[0].deadline > time.time()


async def test_an_errors_retry_after_travels_with_it(bus: Bus) -> None:
    name = svc()

    async def throttled(payload: dict[str, Any], ctx: RequestContext) -> Any:
        raise QuotaExceeded("the quota is used up", headers={"Retry-After": "42"})

    await bus.serve(name, {"throttled": throttled})
    with pytest.raises(QuotaExceeded) as caught:
        await bus.call(name, "throttled", {}, RequestContext())
    assert caught.value.headers == {"Retry-After": "42"}


async def test_a_database_failure_in_a_handler_is_storage_error_and_one_away_service_unavailable(
        bus: Bus) -> None:
    """A failing database is ``storage_error``; one away for a moment (a restart: the connection lost) is
    ``service_unavailable``, to be tried again. Neither answer carries the exception's text."""
    name = svc()

    async def lost(payload: dict[str, Any], ctx: RequestContext) -> Any:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection lost; password=hunter2")

    async def broken(payload: dict[str, Any], ctx: RequestContext) -> Any:
        raise asyncpg.exceptions.UndefinedTableError('relation "secret_versions" does not exist')

    await bus.serve(name, {"lost": lost, "broken": broken})
    for method, error in (("lost", ServiceUnavailable), ("broken", StorageError)):
        with pytest.raises(error) as caught:
            await bus.call(name, method, {}, RequestContext())
        assert "hunter2" not in caught.value.message and "secret_versions" not in caught.value.message


async def test_errors_travel_as_vocabulary_codes(bus: Bus) -> None:
    name = svc()

    async def missing(payload: dict[str, Any], ctx: RequestContext) -> Any:
        raise SecretNotFound("Secret 'a' not found", details={"path": "a"})

    async def conflict(payload: dict[str, Any], ctx: RequestContext) -> Any:
        raise VersionConflict(details={"current_version": 2})

    async def crash(payload: dict[str, Any], ctx: RequestContext) -> Any:
        raise RuntimeError("db password is hunter2")

    await bus.serve(name, {"missing": missing, "conflict": conflict, "crash": crash})
    with pytest.raises(SecretNotFound) as e1:
        await bus.call(name, "missing", {}, RequestContext())
    assert e1.value.details == {"path": "a"} and e1.value.status == 404
    with pytest.raises(VersionConflict) as e2:
        await bus.call(name, "conflict", {}, RequestContext())
    assert e2.value.details == {"current_version": 2}
    with pytest.raises(CofferError) as e3:
        await bus.call(name, "crash", {}, RequestContext())
    assert e3.value.code == "internal_error" and "hunter2" not in e3.value.message


async def test_nobody_serving_is_service_unavailable_at_once(bus: Bus) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await bus.call(svc(), "anything", {}, RequestContext(), timeout=2)
    assert time.monotonic() - started < 1.0


async def test_unserved_method_of_a_served_service_is_service_unavailable(bus: Bus) -> None:
    name = svc()

    async def ok(payload: dict[str, Any], ctx: RequestContext) -> Any:
        return 1

    await bus.serve(name, {"ok": ok})
    with pytest.raises(ServiceUnavailable):
        await bus.call(name, "other", {}, RequestContext(), timeout=1)


async def test_slow_handler_times_out_as_service_unavailable(bus: Bus) -> None:
    name = svc()

    async def slow(payload: dict[str, Any], ctx: RequestContext) -> Any:
        await asyncio.sleep(3)
        return "late"

    await bus.serve(name, {"slow": slow})
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await bus.call(name, "slow", {}, RequestContext(), timeout=0.5)
    assert time.monotonic() - started < 1.0


async def test_expired_request_is_dropped_not_executed(bus: Bus) -> None:
    name = svc()
    ran: list[int] = []

    async def effect(payload: dict[str, Any], ctx: RequestContext) -> Any:
        ran.append(1)
        return "done"

    await bus.serve(name, {"effect": effect})
    past = RequestContext(deadline=time.time() - 1)
    with pytest.raises(ServiceUnavailable):
        await bus.call(name, "effect", {}, past, timeout=0.5)
    await asyncio.sleep(0.2)
    assert ran == []


async def test_only_json_travels(bus: Bus) -> None:
    name = svc()

    async def bad_result(payload: dict[str, Any], ctx: RequestContext) -> Any:
        return {"when": object()}

    await bus.serve(name, {"bad": bad_result})
    with pytest.raises(TypeError):
        await bus.call(name, "bad", {"x": object()}, RequestContext())
    with pytest.raises(CofferError) as err:
        await bus.call(name, "bad", {}, RequestContext())
    assert err.value.code == "internal_error"


async def test_concurrent_calls_get_their_own_replies(bus: Bus) -> None:
    name = svc()

    async def double(payload: dict[str, Any], ctx: RequestContext) -> Any:
        await asyncio.sleep(0.001 * (payload["n"] % 5))
        return payload["n"] * 2

    await bus.serve(name, {"double": double})
    results = await asyncio.gather(*(bus.call(name, "double", {"n": n}, RequestContext()) for n in range(200)))
    assert results == [n * 2 for n in range(200)]


async def test_events_reach_matching_consumers_only(bus: Bus) -> None:
    a, b = svc(), svc()
    got_a: list[Event] = []
    got_b: list[tuple[Event, RequestContext]] = []

    async def on_a(event: Event, ctx: RequestContext) -> None:
        got_a.append(event)

    async def on_b(event: Event, ctx: RequestContext) -> None:
        got_b.append((event, ctx))

    prefix = "x" + secrets.token_hex(3)
    await bus.subscribe(a, [f"{prefix}.*"], on_a)
    await bus.subscribe(b, [f"{prefix}.created"], on_b)
    e1 = Event(type=f"{prefix}.created", tenant_id="ten_1", request_id="req_ev1", data={"path": "p"})
    e2 = Event(type=f"{prefix}.deleted", tenant_id="ten_1", request_id="req_ev2")
    e3 = Event(type=f"other{prefix}.created")
    for e in (e1, e2, e3):
        await bus.publish(e)
    await wait_until(lambda: len(got_a) == 2 and len(got_b) == 1)
    await asyncio.sleep(0.2)
    assert sorted(e.id for e in got_a) == sorted([e1.id, e2.id])
    event, ctx = got_b[0]
    assert event == e1 and ctx.request_id == "req_ev1" and ctx.tenant_id == "ten_1"


async def test_failing_consumer_is_retried_then_dead_lettered(bus: Bus) -> None:
    consumer, prefix = svc(), "y" + secrets.token_hex(3)
    attempts: dict[str, int] = {}

    async def flaky(event: Event, ctx: RequestContext) -> None:
        attempts[event.data["kind"]] = attempts.get(event.data["kind"], 0) + 1
        if event.data["kind"] == "transient" and attempts["transient"] < 2:
            raise StorageError("db blip")  # retryable
        if event.data["kind"] == "poison":
            raise SecretNotFound()  # not retryable: dead-letter at once

    await bus.subscribe(consumer, [f"{prefix}.#"], flaky)
    await bus.publish(Event(type=f"{prefix}.a", data={"kind": "transient"}))
    await bus.publish(Event(type=f"{prefix}.b", data={"kind": "poison"}))
    await wait_until(lambda: attempts.get("transient") == 2 and attempts.get("poison") == 1)
    await wait_until_async(lambda: bus.dead_letter_count(consumer), 1)
    assert attempts == {"transient": 2, "poison": 1}


async def test_publish_many_confirms_each_event_and_delivers_them_all(bus: Bus) -> None:
    """The outbox relay's batch: every event confirmed (outcome ``None``) and delivered once, in order
    when one consumer takes them one at a time."""
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    prefix = "m" + secrets.token_hex(3)
    await bus.subscribe(svc(), [f"{prefix}.#"], on)
    events = [Event(type=f"{prefix}.n{i % 3}", data={"i": i}) for i in range(150)]
    assert await bus.publish_many(events) == [None] * 150
    assert await bus.publish_many([]) == []
    await wait_until(lambda: len(got) == 150)
    await asyncio.sleep(0.2)
    assert sorted(e.data["i"] for e in got) == list(range(150))  # each once


async def test_publish_many_on_a_closed_bus_answers_each_event_unavailable(bus: Bus) -> None:
    events = [Event(type="closed.bus", data={"i": i}) for i in range(3)]
    await bus.close()
    outcomes = await bus.publish_many(events)
    assert len(outcomes) == 3 and all(isinstance(o, ServiceUnavailable) for o in outcomes)


async def test_consumer_log_lines_carry_the_events_request_id(bus: Bus) -> None:
    consumer, prefix = svc(), "z" + secrets.token_hex(3)
    done = asyncio.Event()

    async def handler(event: Event, ctx: RequestContext) -> None:
        import structlog

        structlog.get_logger("t").info("handled_in_consumer")
        done.set()

    await bus.subscribe(consumer, [f"{prefix}.x"], handler)
    with capture_logs(processors=PROCESSORS[:1]) as logs:
        await bus.publish(Event(type=f"{prefix}.x", request_id="req_from_event"))
        await asyncio.wait_for(done.wait(), 5)
    line = next(entry for entry in logs if entry["event"] == "handled_in_consumer")
    assert line["request_id"] == "req_from_event"


async def wait_until(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def wait_until_async(get: Any, expected: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (value := await get()) != expected:
        assert time.monotonic() < deadline, f"got {value!r}, wanted {expected!r}"
        await asyncio.sleep(0.05)
