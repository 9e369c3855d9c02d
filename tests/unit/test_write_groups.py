"""Write groups (shared/groups.py): items handled at once share one write; each caller gets
its own result, or the write's failure (when the failure may be one item's, only that item's caller); an
item alone is written at once."""

from __future__ import annotations

import asyncio

import pytest

from shared.contracts.events import Event
from shared.groups import Groups


def event(i: int) -> Event:
    return Event(type="secret.updated", tenant_id="ten_a", data={"path": f"p/{i}"})


async def test_events_added_while_a_write_runs_go_together_in_the_next() -> None:
    writes: list[int] = []

    async def write(items: list[tuple[Event, list[str]]]) -> list[int]:
        writes.append(len(items))
        await asyncio.sleep(0.05)  # a commit
        return [len(ids) for _, ids in items]

    groups = Groups(write, name="test")
    first = asyncio.create_task(groups.add((event(0), ["s"])))
    await asyncio.sleep(0.01)  # its write is under way: the next 99 wait for it, then go together
    counts = await asyncio.gather(*(groups.add((event(i), ["s"] * (i % 3))) for i in range(1, 100)))
    assert await first == 1 and counts == [i % 3 for i in range(1, 100)]
    assert writes == [1, 99]
    assert await groups.add((event(1000), ["s"])) == 1 and writes[-1] == 1  # alone again, at once


async def test_a_failed_write_fails_each_event_of_its_group_only() -> None:
    calls = 0

    async def write(items: list[tuple[Event, list[str]]]) -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 2:
            raise ConnectionError("the database went away")
        return [1 for _ in items]

    groups = Groups(write, name="test")
    first = asyncio.create_task(groups.add((event(0), ["s"])))
    await asyncio.sleep(0.001)  # the first write is under way; the next nine form the group that fails
    outcomes = await asyncio.gather(*(groups.add((event(i), ["s"])) for i in range(1, 10)), return_exceptions=True)
    assert await first == 1 and all(isinstance(o, ConnectionError) for o in outcomes)
    assert await groups.add((event(99), ["s"])) == 1


async def test_a_group_is_at_most_max_group_items() -> None:
    sizes: list[int] = []

    async def write(items: list[tuple[Event, list[str]]]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0)
        return [0 for _ in items]

    groups = Groups(write, name="test", max_group=8)
    await asyncio.gather(*(groups.add((event(i), [])) for i in range(8 * 2 + 3)))
    assert sizes == [8, 8, 3]  # all queued before the writer ran: 8 at a time


@pytest.mark.parametrize("n", [1, 2])
async def test_nothing_waits_for_a_timer(n: int) -> None:
    async def write(items: list[tuple[Event, list[str]]]) -> list[int]:
        return [1 for _ in items]

    groups = Groups(write, name="test")
    async with asyncio.timeout(0.05):
        assert await asyncio.gather(*(groups.add((event(i), ["s"])) for i in range(n))) == [1] * n


async def test_a_refused_group_is_written_again_one_by_one_so_only_the_bad_item_fails() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[str]:
        writes.append(items)
        await asyncio.sleep(0.01)
        if 13 in items:
            raise ValueError("item 13 breaks its statement")
        return [f"ok {i}" for i in items]

    groups: Groups[int, str] = Groups(write, name="test", retry_alone=lambda exc: isinstance(exc, ValueError))
    first = asyncio.create_task(groups.add(0))
    await asyncio.sleep(0.001)  # 10..14 wait for the first write, then go together and fail
    outcomes = await asyncio.gather(*(groups.add(i) for i in range(10, 15)), return_exceptions=True)
    assert await first == "ok 0"
    assert outcomes[:3] == ["ok 10", "ok 11", "ok 12"] and outcomes[4] == "ok 14"
    assert isinstance(outcomes[3], ValueError)
    assert writes == [[0], [10, 11, 12, 13, 14], [10], [11], [12], [13], [14]]


async def test_a_failure_that_is_not_one_items_fails_the_group_at_once() -> None:
    writes: list[list[int]] = []

    async def write(items: list[int]) -> list[str]:
        writes.append(items)
        await asyncio.sleep(0.01)
        if len(writes) == 2:
            raise ConnectionError("the database went away")
        return [f"ok {i}" for i in items]

    groups: Groups[int, str] = Groups(write, name="test", retry_alone=lambda exc: isinstance(exc, ValueError))
    first = asyncio.create_task(groups.add(0))
    await asyncio.sleep(0.001)
    outcomes = await asyncio.gather(*(groups.add(i) for i in range(1, 5)), return_exceptions=True)
    assert await first == "ok 0" and all(isinstance(o, ConnectionError) for o in outcomes)
    assert writes == [[0], [1, 2, 3, 4]]  # not once more per item against a database that is away


async def test_close_cancels_the_write_under_way_and_those_waiting_for_the_next() -> None:
    started = asyncio.Event()

    async def write(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(60)
        return items

    groups: Groups[int, int] = Groups(write, name="test")
    first = asyncio.create_task(groups.add(1))
    await started.wait()
    second = asyncio.create_task(groups.add(2))
    await asyncio.sleep(0)
    await groups.close()
    for caller in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await caller
