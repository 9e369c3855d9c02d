"""The webhook fan-out scenario of ``make bench``: secret writes, each delivered to three subscriptions."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime
from typing import Any

import aiohttp

from bench.procs import free_port


async def webhook_fanout(session: aiohttp.ClientSession, url: str, auth: dict[str, str],
                         events: int) -> list[dict[str, Any]]:
    """``events`` secret writes, each delivered to 3 subscriptions; deliveries/s and event-to-delivery latency.

    Two rows: from the first write to the last delivery (the events are written meanwhile, at 64 clients,
    by the same processes and cores), and from the last write's answer to the last delivery: the
    dispatcher draining what is left, with nothing else to do.
    """
    from aiohttp import web

    latencies: list[float] = []
    done = asyncio.Event()
    expected = events * 3

    async def receive(request: web.Request) -> web.Response:
        event = await request.json()
        occurred = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")).timestamp()
        latencies.append((time.time() - occurred) * 1000)
        if len(latencies) >= expected:
            done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{hook}", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for n in range(3):
            async with session.post(f"{url}/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/h{n}"},
                                    headers=auth) as r:
                hook = await r.json()
            async with session.post(f"{url}/v1/subscriptions", headers=auth, json={
                    "webhook_id": hook["id"], "event_types": ["secret.created"], "path_pattern": "bench/hooks/**"}):
                pass
        sem = asyncio.Semaphore(64)
        started = time.monotonic()

        async def write(i: int) -> None:
            async with sem, session.put(f"{url}/v1/secrets/bench/hooks/k{i}", json={"value": "v"},
                                        headers=auth) as r:
                await r.read()

        await asyncio.gather(*(write(i) for i in range(events)))
        written, delivered_then = time.monotonic(), len(latencies)
        try:
            await asyncio.wait_for(done.wait(), 300)
        except TimeoutError:
            pass
        finished = time.monotonic()
    finally:
        await runner.cleanup()
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    drained = len(latencies) - delivered_then
    return [{"scenario": f"webhook fan-out ({events}x3)", "requests": len(latencies),
             "errors": expected - len(latencies), "rps": round(len(latencies) / (finished - started), 1),
             "p50_ms": round(q[49], 2), "p95_ms": round(q[94], 2), "p99_ms": round(q[98], 2)},
            {"scenario": f"webhook fan-out ({events}x3), after the last write: {drained} left to deliver",
             "requests": drained, "errors": expected - len(latencies),
             "rps": round(drained / max(finished - written, 1e-3), 1),
             "p50_ms": None, "p95_ms": None, "p99_ms": None}]
