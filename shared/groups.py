"""Group commit: what is being written at once shares one statement and one commit.

Callers add items and wait; one writer task takes whatever has queued up
(at most ``max_group`` items), writes it with one call, and hands each caller
its own result. Each caller still returns only once its own item is
committed. The items arriving while one write is under way go together in
the next. There is no timer: an item alone goes at once.

Used for the audit log (one chained INSERT per batch, services/gateway/audit),
and by the webhook dispatcher for the deliveries of the events it handles,
the subscriptions it looks up for them, and the outcomes of its attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger("coffer.groups")
T = TypeVar("T")
R = TypeVar("R")


class Groups(Generic[T, R]):
    """``add(item)`` → what ``write`` answered for it, written with whatever else is waiting.

    ``write(items)`` answers one result per item, in order. If it raises, every
    caller of that group gets the exception, unless ``retry_alone`` says the
    failure may be one item's (``shared.failures.statement_refused``: the
    database refused the statement, not the connection). Then a group of
    several is written again item by item, so one bad item fails only its own
    caller. A database that is away fails the group at once, not once per item.
    """

    def __init__(self, write: Callable[[list[T]], Awaitable[list[R]]], *, name: str, max_group: int = 256,
                 retry_alone: Callable[[Exception], bool] | None = None) -> None:
        self.write = write
        self.name = name
        self.max_group = max_group
        self.retry_alone = retry_alone
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    async def add(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=f"{self.name}-writer")
        return await future

    async def close(self) -> None:
        """Stop writing; callers still waiting are cancelled."""
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _drain(self) -> None:
        group: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:self.max_group], self._waiting[self.max_group:]
                await self._write(group)
        except asyncio.CancelledError:
            for _, future in group + self._waiting:
                future.cancel()
            self._waiting = []
            raise

    async def _write(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self.write([item for item, _ in group])
        except Exception as exc:  # noqa: BLE001 - handed to the callers, each decides
            if self.retry_alone is not None and len(group) > 1 and self.retry_alone(exc):
                log.warning("group_write_refused", group=self.name, size=len(group), error=type(exc).__name__)
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
