"""A real HTTP webhook receiver on 127.0.0.1 for tests: records requests, answers as told."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """``behave(n, request)`` → (status, headers, delay) for the n-th request (0-based)."""

    behave: Callable[[int, web.Request], tuple[int, dict[str, str], float]] = lambda n, r: (200, {}, 0.0)
    requests: list[Received] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/hook"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        index = len(self.requests)
        self.requests.append(Received({k.lower(): v for k, v in request.headers.items()}, await request.read(),
                                      asyncio.get_running_loop().time()))
        status, headers, delay = self.behave(index, request)
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else "nope")

    def by_webhook_id(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for r in self.requests:
            out.setdefault(r.headers.get("webhook-id", ""), []).append(r)
        return out

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


def fails(times: int, status: int = 500, headers: dict[str, str] | None = None) -> Any:
    return lambda n, r: (status, headers or {}, 0.0) if n < times else (200, {}, 0.0)
