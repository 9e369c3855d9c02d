"""Fan-out in groups: the events being handled at once share one transaction (group commit).

Each event's handler still returns only once its deliveries are committed
(the broker's ack waits for it, so nothing is acknowledged before it is
durable); what changes is that the events arriving while one transaction
commits are written together by the next: one inbox claim statement, one
delivery insert and one commit (one fsync) for up to ``MAX_GROUP`` events,
instead of one of each per event. No timer: an event alone goes at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.contracts.events import Event

#: events per transaction at most
MAX_GROUP = 256
Writer = Callable[[list[tuple[Event, list[str]]]], Awaitable[list[int]]]


class FanOutGroups:
    """``add(event, subscription_ids)`` → deliveries added for it, written with whatever else is waiting."""

    def __init__(self, write: Writer) -> None:
        self.write = write
        self._waiting: list[tuple[Event, list[str], asyncio.Future[int]]] = []
        self._writing = False

    async def add(self, event: Event, subscription_ids: list[str]) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((event, subscription_ids, future))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                try:
                    added = await self.write([(event, ids) for event, ids, _ in group])
                except Exception as exc:  # noqa: BLE001 - each event's handler fails and the bus retries it
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), count in zip(group, added, strict=True):
                    if not future.done():
                        future.set_result(count)
        finally:
            self._writing = False
