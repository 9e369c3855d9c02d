"""The export scenario of ``make bench``: seconds from ``POST /v1/exports`` to ``ready`` for the seeded
secrets (1,000 by default), each bundle opened with pyrage to check every secret is in it."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import aiohttp
import orjson
import pyrage


async def export_once(session: aiohttp.ClientSession, url: str, auth: dict[str, str], prefix: str,
                      identity: Any, recipient: str) -> tuple[float, int]:
    """One export: (seconds to ready, secrets in the opened bundle)."""
    started = time.perf_counter()
    async with session.post(f"{url}/v1/exports", headers=auth,
                            json={"prefix": prefix, "format": "json", "recipient": recipient}) as r:
        job = await r.json()
        assert r.status == 202, job
    while job["status"] == "pending":
        await asyncio.sleep(0.01)
        async with session.get(f"{url}/v1/exports/{job['id']}", headers=auth) as r:
            job = await r.json()
    elapsed = time.perf_counter() - started
    assert job["status"] == "ready", job
    async with session.get(f"{url}/v1/exports/{job['id']}/bundle", headers=auth) as r:
        bundle = await r.read()
    return elapsed, len(orjson.loads(pyrage.decrypt(bundle, [identity])))


async def export_rows(mode: str, url: str, auth: dict[str, str], session: aiohttp.ClientSession,
                      prefix: str, expected: int, runs: int = 5) -> list[dict[str, Any]]:
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    print(f"bench: {mode}: export of {expected} secrets to ready, {runs} runs ...", flush=True)
    await export_once(session, url, auth, prefix, identity, recipient)  # warm-up
    times = []
    for _ in range(runs):
        elapsed, count = await export_once(session, url, auth, prefix, identity, recipient)
        assert count == expected, f"{count} of {expected} secrets in the bundle"
        times.append(elapsed * 1000)
    return [{"mode": mode, "scenario": f"export of {expected} secrets → ready (ms, {runs} runs)",
             "requests": runs, "errors": 0, "rps": None, "p50_ms": round(statistics.median(times), 1),
             "p95_ms": None, "p99_ms": round(max(times), 1)}]
