"""The ACME scenario of ``make bench``: an order for two names from ``POST /v1/pki/acme/orders`` to ``valid``,
against pebble and BIND started on loopback ports (the test suite's peers, ``tests/e2e/acme_peers.py``).

Two rows: orders one after another (the latency of one), and 10 placed at once (how they share the job
runner). pebble runs with ``PEBBLE_VA_NOSLEEP=1``: a real CA's validation adds seconds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.acme_peers import acme_peers


async def _ok(resp: aiohttp.ClientResponse, *expected: int) -> Any:
    body = await resp.json()
    assert resp.status in expected, body
    return body


async def _order(session: aiohttp.ClientSession, url: str, auth: dict[str, str], body: dict[str, Any]) -> float:
    started = time.perf_counter()
    async with session.post(f"{url}/v1/pki/acme/orders", headers=auth, json=body) as r:
        order = await _ok(r, 202)
    while order["status"] in ("pending", "processing"):
        await asyncio.sleep(0.02)
        async with session.get(f"{url}/v1/pki/acme/orders/{order['id']}", headers=auth) as r:
            order = await _ok(r, 200)
    assert order["status"] == "valid", order
    return (time.perf_counter() - started) * 1000


async def acme_rows(mode: str, url: str, auth: dict[str, str], session: aiohttp.ClientSession,
                    runs: int = 10) -> list[dict[str, Any]]:
    print(f"bench: {mode}: ACME orders against pebble + BIND: {runs} one by one, then {runs} at once ...",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="coffer-bench-acme-") as folder:
        async with acme_peers(Path(folder)) as peers:
            async with session.post(f"{url}/v1/pki/acme/accounts", headers=auth, json={
                    "directory_url": peers.directory_url, "ca_bundle": peers.tls_root}) as r:
                account = await _ok(r, 201)
            async with session.post(f"{url}/v1/pki/acme/dns-providers", headers=auth,
                                    json=peers.provider(f"bench-{mode}")) as r:
                dns = await _ok(r, 201)
            base = {"account_id": account["id"], "dns_provider_id": dns["id"]}
            await _order(session, url, auth, {**base, "domains": ["warm.acme.test"]})
            one = [await _order(session, url, auth, {**base, "domains": [f"a{i}.acme.test", f"b{i}.acme.test"]})
                   for i in range(runs)]
            started = time.perf_counter()
            together = await asyncio.gather(*(
                _order(session, url, auth, {**base, "domains": [f"c{i}.acme.test", f"d{i}.acme.test"]})
                for i in range(runs)))
            wall = time.perf_counter() - started
    row = {"mode": mode, "errors": 0, "p95_ms": None}
    return [{**row, "scenario": f"ACME order, 2 names → valid (ms, {runs} one by one)", "requests": runs,
             "rps": None, "p50_ms": round(statistics.median(one), 1), "p99_ms": round(max(one), 1)},
            {**row, "scenario": f"ACME orders, {runs} at once → all valid (ms)", "requests": runs,
             "rps": round(runs / wall, 1), "p50_ms": round(statistics.median(together), 1),
             "p99_ms": round(max(together), 1)}]
