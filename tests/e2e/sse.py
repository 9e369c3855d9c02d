"""A small server-sent-events reader for the event stream tests: the raw bytes kept, events parsed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp


class Sse:
    """One open ``GET /v1/events``: ``next()`` the next event (``{"event", "id", "data"}``), comments counted."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.raw = b""
        self.comments = 0

    async def next(self, timeout: float = 2.0) -> dict[str, Any]:
        """The next event within ``timeout`` seconds (``TimeoutError`` otherwise, ``EOFError`` at the end)."""
        async with asyncio.timeout(timeout):
            fields: dict[str, Any] = {}
            while True:
                line = await self.response.content.readline()
                if not line:
                    raise EOFError
                self.raw += line
                text = line.decode().rstrip("\n")
                if not text:
                    if fields:
                        if "data" in fields:
                            fields["data"] = json.loads(fields["data"])
                        return fields
                    continue
                if text.startswith(":"):
                    self.comments += 1
                    continue
                key, _, value = text.partition(": ")
                fields[key] = value

    async def until(self, event: str, timeout: float = 2.0, **data: Any) -> dict[str, Any]:
        """The next event of type ``event`` whose ``data.data`` holds ``data`` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                got = await self.next(timeout)
                inner = got.get("data", {}).get("data", {}) if isinstance(got.get("data"), dict) else {}
                if got.get("event") == event and all(inner.get(k) == v for k, v in data.items()):
                    return got

    async def nothing_within(self, seconds: float) -> None:
        """No event in ``seconds`` (comments allowed)."""
        with contextlib.suppress(TimeoutError):
            got = await self.next(seconds)
            raise AssertionError(f"unexpected event {got}")


@contextlib.asynccontextmanager
async def stream(http: aiohttp.ClientSession, url: str, token: str, *, params: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> AsyncIterator[Sse]:
    """``GET url/v1/events`` open for the block (200 and ``text/event-stream`` asserted)."""
    async with http.get(url + "/v1/events", params=params, timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
                        headers={"Authorization": f"Bearer {token}", **(headers or {})}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        yield Sse(resp)
