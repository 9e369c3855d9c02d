"""RPC coalescing on RabbitMQ (``shared/bus/rabbit/batch.py``): calls issued together travel in one message,
and per call nothing changes — its result, its error code, its timeout; a slow item delays no other; a batch
whose server dies fails each call within its timeout; a batch nobody serves fails every call at once.
The same tests run on the in-process bus (no batches there: the contract alone)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from shared.bus import Bus
from shared.bus.rabbit import RabbitBus
from shared.context import RequestContext
from shared.errors import SecretNotFound, ServiceUnavailable
from shared.metrics import RPC_BATCH_ITEMS
from tests.integration.test_bus_contract import svc


def batch_messages(service: str) -> tuple[float, float]:
    """(messages sent, calls in them) to ``service`` so far, from the bus's histogram."""
    samples = {s.name: s.value for m in RPC_BATCH_ITEMS.collect() for s in m.samples
               if s.labels.get("service") == service}
    return samples.get("coffer_rpc_batch_items_count", 0.0), samples.get("coffer_rpc_batch_items_sum", 0.0)


async def test_many_calls_at_once_share_messages_and_each_gets_its_own_answer(bus: Bus) -> None:
    name = svc()

    async def double(payload: dict[str, Any], ctx: RequestContext) -> Any:
        return {"n": payload["n"] * 2, "request": ctx.request_id}

    await bus.serve(name, {"double": double})
    results = await asyncio.gather(*(bus.call(name, "double", {"n": i}, RequestContext(request_id=f"req_{i}"))
                                     for i in range(200)))
    assert results == [{"n": i * 2, "request": f"req_{i}"} for i in range(200)]
    if isinstance(bus, RabbitBus):
        messages, calls = batch_messages(name)
        assert calls == 200 and messages <= 20, (messages, calls)  # 200 calls issued in one iteration


async def test_a_mixed_batch_answers_each_call_with_its_own_outcome(bus: Bus) -> None:
    name = svc()

    async def maybe(payload: dict[str, Any], ctx: RequestContext) -> Any:
        if payload["n"] % 3 == 0:
            raise SecretNotFound(f"no {payload['n']}", details={"n": payload["n"]})
        if payload["n"] % 3 == 1:
            raise RuntimeError("a bug with a secret in its text: hunter2")
        return {"ok": payload["n"]}

    await bus.serve(name, {"maybe": maybe})
    outcomes = await asyncio.gather(*(bus.call(name, "maybe", {"n": i}, RequestContext()) for i in range(30)),
                                    bus.call(name, "nope", {}, RequestContext()), return_exceptions=True)
    for i, outcome in enumerate(outcomes[:30]):
        if i % 3 == 0:
            assert isinstance(outcome, SecretNotFound) and outcome.details == {"n": i}
        elif i % 3 == 1:
            assert getattr(outcome, "code", None) == "internal_error" and "hunter2" not in str(outcome)
        else:
            assert outcome == {"ok": i}
    assert isinstance(outcomes[30], ServiceUnavailable)  # a method the service does not serve


async def test_a_slow_item_does_not_delay_its_batch_mates(bus: Bus) -> None:
    name = svc()

    async def work(payload: dict[str, Any], ctx: RequestContext) -> Any:
        await asyncio.sleep(payload["sleep"])
        return payload["sleep"]

    await bus.serve(name, {"work": work})
    done: dict[int, float] = {}
    started = time.monotonic()

    async def one(i: int, sleep: float) -> None:
        await bus.call(name, "work", {"sleep": sleep}, RequestContext(), timeout=5.0)
        done[i] = time.monotonic() - started

    await asyncio.gather(one(0, 1.5), *(one(i, 0.0) for i in range(1, 40)))
    fast = [done[i] for i in range(1, 40)]
    assert max(fast) < 0.75, sorted(fast)[-5:]
    assert done[0] >= 1.5


async def test_a_batch_whose_server_dies_fails_each_call_within_its_timeout(amqp_url: str) -> None:
    name = svc()
    server = RabbitBus(amqp_url, name="dying-server", rpc_timeout=2.0)
    client = RabbitBus(amqp_url, name="batch-client", rpc_timeout=2.0)
    await server.start()
    await client.start()
    entered = asyncio.Event()

    async def hang(payload: dict[str, Any], ctx: RequestContext) -> Any:
        entered.set()
        await asyncio.sleep(60)

    try:
        await server.serve(name, {"hang": hang})
        started = time.monotonic()
        calls = [asyncio.create_task(client.call(name, "hang", {"i": i}, RequestContext(), timeout=timeout))
                 for i, timeout in enumerate([1.0, 1.5, 2.0] * 10)]
        await asyncio.wait_for(entered.wait(), 2.0)
        await server.close()  # the server goes away with the whole batch in its hands
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, ServiceUnavailable) for o in outcomes), outcomes
        assert time.monotonic() - started < 2.6
    finally:
        await client.close()
        await server.close()


async def test_a_batch_nobody_serves_fails_every_call_at_once(bus: Bus) -> None:
    name = svc()
    started = time.monotonic()
    outcomes = await asyncio.gather(*(bus.call(name, "m", {"i": i}, RequestContext(), timeout=3.0)
                                      for i in range(20)), return_exceptions=True)
    assert all(isinstance(o, ServiceUnavailable) for o in outcomes), outcomes
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("count", [1, 64, 65, 300])
async def test_batch_sizes_at_the_caps(bus: Bus, count: int) -> None:
    name = svc()

    async def echo(payload: dict[str, Any], ctx: RequestContext) -> Any:
        return payload

    await bus.serve(name, {"echo": echo})
    big = "x" * 40_000  # four of these pass 128 KiB: a batch leaves early
    results = await asyncio.gather(*(bus.call(name, "echo", {"i": i, "pad": big if i % 50 == 0 else ""},
                                              RequestContext()) for i in range(count)))
    assert [r["i"] for r in results] == list(range(count))
    if isinstance(bus, RabbitBus):
        messages, calls = batch_messages(name)
        assert calls == count and messages >= -(-count // 64)
