"""A pooled connection held to ``LISTEN`` on one channel: what wakes a relay or a hub without a poll."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg


class Listener:
    """``callback()`` on each notification of ``channel``. ``ensure`` (again after a failure: a connection
    that was lost is given back and another taken); ``close`` gives the connection back."""

    def __init__(self, pool: asyncpg.Pool, channel: str, callback: Callable[[], None]) -> None:
        self.pool = pool
        self.channel = channel
        self.callback = callback
        self._conn: Any = None

    def _notified(self, *_: Any) -> None:
        self.callback()

    async def ensure(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            return
        await self.close()
        conn = await self.pool.acquire()
        try:
            await conn.add_listener(self.channel, self._notified)
        except Exception:
            await self.pool.release(conn)
            raise
        self._conn = conn

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.remove_listener(self.channel, self._notified)
            with contextlib.suppress(Exception):
                await self.pool.release(conn)
