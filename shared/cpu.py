"""CPU-heavy work off the event loop: scrypt, RSA key generation, and the like.

One bounded pool of threads per process, as many as there are cores: more
threads than cores add memory (each scrypt takes 32 MiB; 6 default workers
peaked the gateway at 274 MB under 64 token requests), not throughput.
Threads suffice because ``cryptography`` releases the GIL in that work
(measured here: while RSA-4096 keys were made in a thread, ~0.9 s each, the
event loop's longest pause was 3.5 ms), so heartbeats and other requests go on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="coffer-cpu")


async def run_cpu(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in the CPU pool; the event loop goes on meanwhile."""
    if kwargs:
        return await asyncio.get_running_loop().run_in_executor(_POOL, lambda: fn(*args, **kwargs))
    return await asyncio.get_running_loop().run_in_executor(_POOL, fn, *args)
