"""The shared job runner: sweeps, the leased queue's concurrency and wake-ups, backoff."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from shared.jobs import QueueRunner, Sweep, backoff, run_sweeps


class Work:
    """An in-memory leased queue: items claimed at most once, ``slow`` of them at a time measured."""

    def __init__(self, items: int, delay: float = 0.02, crash_on: int | None = None) -> None:
        self.todo = list(range(items))
        self.done: list[int] = []
        self.running = 0
        self.most_at_once = 0
        self.delay = delay
        self.crash_on = crash_on

    async def claim(self, free: int) -> Sequence[int]:
        taken, self.todo = self.todo[:free], self.todo[free:]
        return taken

    async def work(self, item: int) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delay)
            if item == self.crash_on:
                raise RuntimeError("a bug in one item")
            self.done.append(item)
        finally:
            self.running -= 1


async def _until(predicate: object, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 - polling a test fake
            await asyncio.sleep(0.005)


async def test_a_queue_runs_every_item_at_most_concurrency_at_a_time() -> None:
    work = Work(40)
    runner = QueueRunner(work, name="t", concurrency=4, poll_interval=10)
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: len(work.done) == 40)  # freed slots wake the runner: no 10 s poll waits
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sorted(work.done) == list(range(40)) and work.most_at_once == 4


async def test_an_item_that_crashes_does_not_stop_the_queue_and_wake_starts_new_work() -> None:
    work = Work(5, crash_on=2)
    runner = QueueRunner(work, name="t", concurrency=2, poll_interval=10)
    task = asyncio.create_task(runner.run())
    try:
        await _until(lambda: len(work.done) == 4)
        work.todo = [100]
        runner.wake()  # e.g. a new delivery was written
        await _until(lambda: 100 in work.done, timeout=1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert 2 not in work.done


async def test_sweeps_repeat_at_once_while_busy_and_survive_failures() -> None:
    calls: dict[str, int] = {"busy": 0, "broken": 0}
    left = [250]

    async def busy(limit: int) -> int:
        calls["busy"] += 1
        done = min(limit, left[0])
        left[0] -= done
        return done

    async def broken(limit: int) -> int:
        calls["broken"] += 1
        raise ConnectionError("database away")

    task = asyncio.create_task(run_sweeps([Sweep("busy", busy), Sweep("broken", broken)], interval=10, batch=100))
    try:
        await _until(lambda: left[0] == 0, timeout=1)  # 100, 100, 50: no interval waited between full batches
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls["busy"] == 3 and calls["broken"] >= 2


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    rng = random.Random(1)
    assert 0.8 <= backoff(1, rng=rng) <= 1.2
    assert 6.4 <= backoff(4, rng=rng) <= 9.6
    assert backoff(40, cap=60, rng=rng) <= 72
