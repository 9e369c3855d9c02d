"""The readers of bench/events.py, in a process of their own: ``--streams`` event streams open at once, each
arrival's wall-clock time noted per secret path, until every stream has ``--expect`` events or ``--timeout``.

    BENCH_TOKEN=… python -m bench.event_readers --url URL --streams 200 --expect 500 --pattern 'bench/x/**'

Prints ``ready`` once every stream is open (its answer's headers in: the gateway has it registered), then,
at the end, one JSON line: ``{"arrivals": {path: [time, …]}, "received": n, "per_stream": [n, …]}``. A line
``done`` on stdin (the writes are over) leaves the streams ``--grace`` seconds more to get what is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import time
from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

from yarl import URL

_PATH = re.compile(rb'"path":"([^"]+)"')


async def read(url: str, pattern: str, expect: int, opened: asyncio.Queue[int], arrivals: dict[str, list[float]],
               counts: list[int], index: int) -> None:
    """One stream on a plain connection, read by the chunk: the readers' own CPU is the benchmark's load too,
    so they parse no more than each event's path (a line split across two chunks is kept for the next)."""
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    query = urlencode({"types": "secret.*", "path_pattern": pattern})
    writer.write(f"GET /v1/events?{query} HTTP/1.1\r\nHost: {target.host}\r\n"
                 f"Authorization: Bearer {os.environ['BENCH_TOKEN']}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"bench: event stream {index}: {head[:200]!r}")
    await opened.put(index)
    rest = b""
    try:
        while counts[index] < expect:
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.time()
            chunk, _, tail = (rest + chunk).rpartition(b"\n")
            rest = tail
            for found in _PATH.finditer(chunk):
                arrivals[found.group(1).decode()].append(now)
                counts[index] += 1
    finally:
        writer.close()


async def _done_then(grace: float) -> None:
    """Returns ``grace`` seconds after ``done`` comes on stdin."""
    loop = asyncio.get_running_loop()
    while (await loop.run_in_executor(None, input)).strip() != "done":
        pass
    await asyncio.sleep(grace)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--pattern", required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args()
    arrivals: dict[str, list[float]] = defaultdict(list)
    counts = [0] * args.streams
    opened: asyncio.Queue[int] = asyncio.Queue()
    readers = [asyncio.create_task(read(args.url, args.pattern, args.expect, opened, arrivals, counts, i))
               for i in range(args.streams)]
    for _ in range(args.streams):
        await asyncio.wait_for(opened.get(), 60)
    print("ready", flush=True)
    # every stream's events, or the writes over and a grace, whichever first
    waiting: set[asyncio.Future[Any]] = {asyncio.gather(*readers), asyncio.ensure_future(_done_then(args.grace))}
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED), args.timeout)
    for future in waiting:
        future.cancel()
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    print(json.dumps({"arrivals": arrivals, "received": sum(counts), "per_stream": counts,
                      "cpu_s": time.process_time()}), flush=True)


if __name__ == "__main__":
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())
