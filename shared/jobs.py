"""Work done once across replicas, claimed from PostgreSQL with ``FOR UPDATE SKIP LOCKED``.

Every replica runs the same jobs; the database decides who does which item.
Two shapes:

- **Sweeps** (``run_sweeps``): a batch claimed and done inside one
  transaction — quick work that only touches the database (expiry events,
  retention purges, certificate-expiry notices). A replica that dies mid-batch
  rolls it back; another takes it.
- **A leased queue** (``QueueRunner``): items claimed with a lease in a short
  transaction and worked on outside it — slow work against other systems
  (webhook deliveries, revoking a lease in a target database, ACME orders).
  The worker records each outcome and schedules retries (``backoff``); an item
  whose worker died comes back when its lease ends, never twice at once.

Both back off while storage fails, and neither holds an in-memory timer as
the only record of work to do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import structlog

log = structlog.get_logger("coffer.jobs")
T = TypeVar("T")


def backoff(attempt: int, *, base: float = 1.0, cap: float = 3600.0, jitter: float = 0.2,
            rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1, 2, …): ``base`` doubling up to ``cap``, ± ``jitter``."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    spread = (rng or random).uniform(1 - jitter, 1 + jitter)
    return delay * spread


@dataclass(frozen=True)
class Sweep:
    """One kind of sweep: ``run(limit)`` claims up to ``limit`` due rows, does them, commits, and says how many."""

    name: str
    run: Callable[[int], Awaitable[int]]


async def run_sweeps(sweeps: Sequence[Sweep], interval: float, *, batch: int = 100) -> None:
    """Forever: every sweep, again at once while one fills its batch, else after ``interval`` seconds."""
    while True:
        busy = False
        for sweep in sweeps:
            try:
                done = await sweep.run(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be away: try again later
                log.warning("sweep_failed", sweep=sweep.name, error=type(exc).__name__)
                continue
            if done:
                log.info("sweep_done", sweep=sweep.name, rows=done)
            busy = busy or done >= batch
        if not busy:
            await asyncio.sleep(interval)


class LeasedQueue(Protocol[T]):
    """A table of work items: claimed with a lease, worked on, each outcome recorded by ``work``."""

    async def claim(self, free: int) -> Sequence[T]:
        """Up to ``free`` due items, leased to this worker (``SKIP LOCKED``: another replica skips them)."""

    async def work(self, item: T) -> None:
        """Do the item and record what happened (success, or a retry at some later time)."""


class QueueRunner(Generic[T]):
    """Runs a ``LeasedQueue``: at most ``concurrency`` items at a time, woken early by ``wake()``."""

    def __init__(self, queue: LeasedQueue[T], *, name: str, concurrency: int, poll_interval: float) -> None:
        self.queue = queue
        self.name = name
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self, *_: object) -> None:
        """Look for work now (a new item was written, or a slot freed)."""
        self._wake.set()

    async def run(self) -> None:
        failures = 0
        try:
            while True:
                self._wake.clear()
                try:
                    await self._claim_and_start()
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the database may be away: back off, try again
                    failures += 1
                    log.warning("queue_claim_failed", queue=self.name, error=type(exc).__name__)
                wait = self.poll_interval if not failures else min(backoff(failures, base=self.poll_interval), 10.0)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _claim_and_start(self) -> None:
        free = self.concurrency - len(self._tasks)
        if free <= 0:
            return
        for item in await self.queue.claim(free):
            task = asyncio.create_task(self._work(item))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    async def _work(self, item: T) -> None:
        try:
            await self.queue.work(item)
        except Exception:  # noqa: BLE001 - its lease ends and the item is tried again
            log.exception("queue_work_crashed", queue=self.name)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._wake.set()  # a slot is free
