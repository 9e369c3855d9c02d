"""``Client`` (sync) and ``AsyncClient`` (asyncio): one method per API call, on httpx.

Both share ``_Api``: each method describes its call (``_Call``) and how to read
the answer; ``Client._call`` runs it at once, ``AsyncClient._call`` returns a
coroutine — so ``AsyncClient`` has the same methods, awaited, and its lists are
async iterators. Lists follow ``next_cursor`` to the last page.

Retries: a 429 is retried after its ``Retry-After``; a 503 too, for GET, PUT
and DELETE only (a POST that timed out behind the gateway may have been done:
it is not repeated). At most ``retries`` more tries (2: three in all), and only
when the wait the server asks for is at most ``max_wait`` seconds; otherwise
the error is raised at once, ``retry_after`` on it. ``retries=0``: never.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpx

from coffer_client._acme import API_CALLS, _AcmeApi
from coffer_client._base import DEFAULT_ADDR, VERSION, _Base, _Call
from coffer_client._events import IDLE_TIMEOUT, Event, async_events, sync_events

__all__ = ["API_CALLS", "DEFAULT_ADDR", "VERSION", "AsyncClient", "Client"]


class Client(_Base, _AcmeApi):
    """Coffer over HTTP, synchronously. ``Client(addr, token)``; both default to ``COFFER_ADDR`` /
    ``COFFER_TOKEN`` (and ``COFFER_TENANT`` for ``X-Tenant-ID``)."""

    def __init__(self, addr: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        super().__init__(addr, token, **kwargs)
        self._http = httpx.Client(timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.send(self._build(self._http, call))
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            wait, result = self._read(call, response, attempt)
            if wait is None:
                return result
            time.sleep(wait)
            attempt += 1

    def events(self, types: Iterable[str] | None = None, path_pattern: str | None = None, *,
               last_event_id: str | None = None, idle_timeout: float = IDLE_TIMEOUT,
               on_connect: Callable[[], None] | None = None) -> Iterator[Event]:
        """The tenant's events as they happen (``GET /v1/events``), for ever: ``for event in coffer.events(
        types=["secret.*"], path_pattern="app/**")``. Resumes by itself after a drop (coffer_client._events)."""
        return sync_events(self, types, path_pattern, last_event_id, idle_timeout, on_connect)

    def _list(self, call: _Call, convert: Callable[[Any], Any]) -> Iterator[Any]:
        cursor = None
        while True:
            page = self._call(self._page_call(call, cursor))
            for item in page["items"]:
                yield convert(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return


class AsyncClient(_Base, _AcmeApi):
    """Coffer over HTTP, for asyncio: the same methods as ``Client``, awaited; lists are ``async for``."""

    def __init__(self, addr: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        super().__init__(addr, token, **kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, call: _Call) -> Any:  # type: ignore[override]
        attempt = 0
        while True:
            try:
                response = await self._http.send(self._build(self._http, call))
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
            wait, result = self._read(call, response, attempt)
            if wait is None:
                return result
            await asyncio.sleep(wait)
            attempt += 1

    def events(self, types: Iterable[str] | None = None, path_pattern: str | None = None, *,
               last_event_id: str | None = None, idle_timeout: float = IDLE_TIMEOUT,
               on_connect: Callable[[], None] | None = None) -> AsyncIterator[Event]:
        """``Client.events`` for ``async for``."""
        return async_events(self, types, path_pattern, last_event_id, idle_timeout, on_connect)

    async def _list(self, call: _Call, convert: Callable[[Any], Any]) -> AsyncIterator[Any]:  # type: ignore[override]
        cursor = None
        while True:
            page = await self._call(self._page_call(call, cursor))
            for item in page["items"]:
                yield convert(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return
