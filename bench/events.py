"""``make bench``'s event stream section (issue #31): secret writes with ``--streams`` event streams open, and
without.

One embedded platform (``python -m services.embedded`` on a fresh PostgreSQL database, rate limits raised as
bench/run.py's stacks raise them, ``COFFER_EVENT_STREAMS`` raised so one identity may hold every stream). Each
round writes ``--stream-writes`` new secrets (``PUT /v1/secrets/…``, ``--stream-clients`` at a time, each
answer's wall-clock time noted) twice: once with no stream open, once while ``--streams`` streams
(``GET /v1/events?types=secret.*&path_pattern=<the round's paths>``) are open in a reader process of their own
(bench/event_readers.py, so that reading 100,000 events does not take this process's CPU from the writers).
Each event's delay is its arrival at a reader minus its write's answer here (same machine, same clock). The
order of the two turns every round, after the outboxes settle.

Reported: writes/s of each (the mean of the rounds), the ratio with streams to without, the event delay's
p50/p99 over every (stream, event) of every round, and events received against expected. Targets (#31): p99
delay ≤ 250 ms; writes with streams ≥ 0.9 × without.

    python -m bench.run --only events [--streams 200] [--stream-writes 500] [--stream-rounds 3]
    python -m bench.run --only events --streams-short    # the smoke run (tests/e2e/test_bench_events.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.settle import settle
from bench.stack import embedded_stack

ROOT = Path(__file__).resolve().parent.parent
P99_TARGET_MS = 250.0
RATIO_TARGET = 0.9
Wrk = Callable[..., Awaitable[dict[str, Any]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The section's options, on bench/run.py's parser."""
    parser.add_argument("--no-streams", dest="stream_section", action="store_false",
                        help="skip the event stream section (bench/events.py)")
    parser.add_argument("--streams", type=int, default=200, help="event streams open while writing")
    parser.add_argument("--stream-writes", type=int, default=500, help="secrets written per run")
    parser.add_argument("--stream-clients", type=int, default=16, help="writes at once")
    parser.add_argument("--stream-rounds", type=int, default=3, help="rounds of (without, with) streams")
    parser.add_argument("--streams-short", action="store_true",
                        help="the section's smoke run: 20 streams, 50 writes, 1 round")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else 0.0


async def write(session: aiohttp.ClientSession, url: str, auth: dict[str, str], paths: list[str],
                clients: int) -> tuple[float, dict[str, float], list[float]]:
    """Write ``paths`` (``clients`` at a time): writes/s, each answer's wall-clock time, each write's latency."""
    answered: dict[str, float] = {}
    took: list[float] = []
    queue = list(reversed(paths))

    async def worker() -> None:
        while queue:
            path = queue.pop()
            started = time.perf_counter()
            async with session.put(f"{url}/v1/secrets/{path}", json={"value": secrets.token_hex(16)},
                                   headers=auth) as resp:
                await resp.read()
                if resp.status not in (200, 201):
                    raise SystemExit(f"bench: events: PUT {path}: {resp.status}")
            answered[path] = time.time()
            took.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(paths) / (time.perf_counter() - started), answered, took


def platform_cpu() -> float:
    """CPU seconds of the platform's process so far (``PLATFORM_PID``, set once its stack is up)."""
    times = psutil.Process(PLATFORM_PID[0]).cpu_times()
    return times.user + times.system


PLATFORM_PID = [0]


async def with_streams(session: aiohttp.ClientSession, url: str, auth: dict[str, str], token: str, base: str,
                       paths: list[str], streams: int, clients: int) -> dict[str, Any]:
    """The writes while ``streams`` streams of ``base/**`` are open in the reader process (``cpu``: the
    platform's CPU seconds over the writes, ``readers_cpu``: the reader process's, from its start)."""
    reader = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.event_readers", "--url", url, "--streams", str(streams),
        "--expect", str(len(paths)), "--pattern", f"{base}/**", cwd=ROOT, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TOKEN": token})
    assert reader.stdout is not None and reader.stdin is not None
    try:
        ready = await asyncio.wait_for(reader.stdout.readline(), 90)
        if ready.strip() != b"ready":
            raise SystemExit("bench: events: the readers did not open their streams")
        before = platform_cpu()
        rate, answered, took = await write(session, url, auth, paths, clients)
        cpu = platform_cpu() - before
        reader.stdin.write(b"done\n")
        await reader.stdin.drain()
        reader.stdin.close()
        out = await asyncio.wait_for(reader.stdout.read(), 120)
    finally:
        if reader.returncode is None:
            reader.kill()
        await reader.wait()
    got = json.loads(out.decode().strip().splitlines()[-1])
    delays = [max(0.0, arrived - answered[path]) * 1000 for path, times in got["arrivals"].items()
              if path in answered for arrived in times]
    return {"rate": rate, "took": took, "delays": delays, "received": got["received"],
            "expected": streams * len(paths), "cpu": cpu, "readers_cpu": got.get("cpu_s")}


async def measure(args: argparse.Namespace, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """The section: a row without streams, a row with them."""
    if getattr(args, "streams_short", False):
        streams, writes, rounds = 20, 50, 1
    else:
        streams, writes, rounds = args.streams, args.stream_writes, args.stream_rounds
    clients = args.stream_clients
    load_before = os.getloadavg()
    tag = secrets.token_hex(3)
    without: list[dict[str, Any]] = []
    within: list[dict[str, Any]] = []
    print(f"bench: events: embedded platform; {rounds} round(s) of {writes} writes at {clients} at a time, "
          f"without streams and with {streams} open ...", flush=True)
    async with embedded_stack("events", session, {"COFFER_EVENT_STREAMS": str(streams + 10)}) as (stack, dsn):
        async with session.post(f"{stack.url}/v1/sys/init") as resp:
            init = await resp.json()
        token = init["token"]  # every scope, events included
        assert stack.proc is not None
        PLATFORM_PID[0] = stack.proc.pid
        auth = {"Authorization": f"Bearer {token}"}
        for rnd in range(rounds):
            for kind in (("without", "with") if rnd % 2 == 0 else ("with", "without")):
                await settle(dsn, f"events: {kind}", None)
                base = f"bench-events/{tag}/r{rnd}-{kind}"
                paths = [f"{base}/s{i}" for i in range(writes)]
                print(f"bench: events: round {rnd + 1}/{rounds}: {writes} writes {kind} streams ...", flush=True)
                if kind == "without":
                    before = platform_cpu()
                    rate, _, took = await write(session, stack.url, auth, paths, clients)
                    without.append({"rate": rate, "took": took, "cpu": platform_cpu() - before})
                else:
                    within.append(await with_streams(session, stack.url, auth, token, base, paths, streams, clients))
    base_rate = statistics.fmean(r["rate"] for r in without)
    rate = statistics.fmean(r["rate"] for r in within)
    delays = [d for r in within for d in r["delays"]]
    common = {"streams": streams, "writes": writes, "clients": clients, "rounds": rounds,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()}
    return [
        {"run": "without streams", "writes_per_s": round(base_rate, 1), "ratio": 1.0,
         "write_p50_ms": round(percentile([t for r in without for t in r["took"]], 0.5) * 1000, 2),
         "write_p99_ms": round(percentile([t for r in without for t in r["took"]], 0.99) * 1000, 2),
         "delay_p50_ms": None, "delay_p99_ms": None, "received": None, "expected": None,
         "platform_cpu_ms_per_write": round(statistics.fmean(r["cpu"] for r in without) / writes * 1000, 3),
         "readers_cpu_s": None, **common},
        {"run": f"{streams} streams open", "writes_per_s": round(rate, 1),
         "ratio": round(rate / base_rate, 3) if base_rate else None,
         "write_p50_ms": round(percentile([t for r in within for t in r["took"]], 0.5) * 1000, 2),
         "write_p99_ms": round(percentile([t for r in within for t in r["took"]], 0.99) * 1000, 2),
         "delay_p50_ms": round(percentile(delays, 0.5), 1), "delay_p99_ms": round(percentile(delays, 0.99), 1),
         "received": sum(r["received"] for r in within), "expected": sum(r["expected"] for r in within),
         "platform_cpu_ms_per_write": round(statistics.fmean(r["cpu"] for r in within) / writes * 1000, 3),
         # the harness's readers share the 2 cores with the platform: their CPU is what the writes lose to them
         "readers_cpu_s": round(statistics.fmean(r["readers_cpu"] or 0 for r in within), 2), **common},
    ]


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    r0 = rows[0]
    print(f"\nEvent streams (issue #31): embedded, {r0['writes']} secret writes per run at {r0['clients']} at a time, "
          f"{r0['rounds']} round(s) (order turning); writes/s the mean of the rounds; delay = an event's arrival "
          f"at a reader minus its write's answer, over every stream and event; load average "
          f"{r0['loadavg_before'][0]:.2f} before, {r0['loadavg_after'][0]:.2f} after, {os.cpu_count()} cores\n")
    print("| run | writes/s | × without streams | write p50 ms | write p99 ms | event delay p50 ms | "
          "event delay p99 ms | events received | platform CPU ms/write | readers' CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        got = "-" if r["expected"] is None else f"{r['received']}/{r['expected']}"
        p50 = "-" if r["delay_p50_ms"] is None else r["delay_p50_ms"]
        p99 = "-" if r["delay_p99_ms"] is None else r["delay_p99_ms"]
        readers = "-" if r["readers_cpu_s"] is None else r["readers_cpu_s"]
        print(f"| {r['run']} | {r['writes_per_s']} | {r['ratio']} | {r['write_p50_ms']} | {r['write_p99_ms']} | "
              f"{p50} | {p99} | {got} | {r['platform_cpu_ms_per_write']} | {readers} |")
    streamed = rows[1]
    verdicts = [
        f"event delay p99 {streamed['delay_p99_ms']} ms: "
        + ("meets" if streamed["delay_p99_ms"] <= P99_TARGET_MS else "ABOVE") + f" the {P99_TARGET_MS:.0f} ms target",
        f"writes {streamed['ratio']} × without streams: "
        + ("meets" if (streamed["ratio"] or 0) >= RATIO_TARGET else "BELOW") + f" the {RATIO_TARGET} target",
    ]
    if streamed["received"] != streamed["expected"]:
        verdicts.append(f"{streamed['expected'] - streamed['received']} events did not arrive")
    if r0["rounds"] < 2:
        verdicts.append("one round: a smoke run, not a measurement")
    print("\ntargets: " + "; ".join(verdicts))


async def main(args: argparse.Namespace, wrk: Wrk) -> None:
    """``python -m bench.run --only events``: the section alone; its table, and JSON in bench/results/."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.stream_clients * 2)) as session:
        rows = await measure(args, session)
    print_table(rows)
    out = ROOT / "bench" / "results" / f"events-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "events": rows}, indent=1))
    print(f"\nbench: wrote {out.relative_to(ROOT)}")
