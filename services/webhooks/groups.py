"""Writes in groups: what is being handled at once shares one statement and one commit (group commit).

The dispatcher writes two things per item: an event's deliveries (fan-out),
and a delivery's attempt (its outcome). Each caller still returns only once
its own item is committed (an event's ack waits for its deliveries, so
nothing is acknowledged before it is durable; a delivery's lease holds until
its outcome is in). What changes is that the items arriving while one
transaction commits are written together by the next: one statement and one
commit (one fsync) for up to ``MAX_GROUP`` items, instead of one of each per
item. No timer: an item alone goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

#: items per transaction at most
MAX_GROUP = 256
T = TypeVar("T")
R = TypeVar("R")


class Groups(Generic[T, R]):
    """``add(item)`` → what ``write`` answered for it, written with whatever else is waiting.

    ``write(items)`` answers one result per item, in order. If it raises, every
    caller of that group gets the exception, unless ``retry_alone`` says the
    failure may be one item's (the database refused the statement, say, not
    the connection): then a group of several is written again item by item,
    so one bad item fails only its own caller. A database that is away fails
    the group at once instead of once per item.
    """

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], *,
                 retry_alone: Callable[[Exception], bool] | None = None) -> None:
        self.write = write
        self.retry_alone = retry_alone
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writing = False
        self._writer: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    async def add(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if not self._writing:
            self._writing = True
            self._writer = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                await self._write(group)
        finally:
            self._writing = False

    async def _write(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.write([item for item, _ in group])
        except Exception as exc:  # noqa: BLE001 - handed to the callers, each decides
            if self.retry_alone is not None and len(group) > 1 and self.retry_alone(exc):
                for one in group:
                    await self._write([one])
                return
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)
