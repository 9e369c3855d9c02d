"""The steady mixed load of ``make chaos`` and the ledger of what the clients were told.

Each client owns its keys (no two clients write one path), so what happened to a key is a single
history: CAS writes (``expected_version``), reads, and short-lived keys created and deleted. A write
answered 2xx is *acknowledged*; one answered 503, cut off or timed out has an *unknown* outcome, and the
client reads the key before touching it again to learn whether it was applied (``resolved``). The final
check (``verify``) holds the database, the events and the deliveries to that ledger.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

# the answers a fault may give: the vocabulary's "try again", or nothing at all (a process killed mid-request)
UNAVAILABLE = "service_unavailable"


@dataclass
class Op:
    kind: str  # write | create | delete | read | probe
    key: str
    window: str  # the fault phase it started in
    started: float
    ended: float = 0.0
    status: int | None = None  # None: no HTTP answer
    code: str | None = None  # the envelope's code, or the transport's failure
    value: str | None = None
    version: int | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def failed(self) -> bool:
        """Answered by the fault, not by the request's own merits."""
        return self.status is None or self.status >= 500


@dataclass
class Ledger:
    ops: list[Op] = field(default_factory=list)
    acked: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)  # (key, version) -> (value, window)
    applied: dict[tuple[str, int], tuple[str, str]] = field(default_factory=dict)  # unknown outcome, found applied
    deleted: dict[str, str] = field(default_factory=dict)  # churn key -> window of its acknowledged delete
    wrong_reads: list[Op] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    ended: float = float("inf")  # when the load stopped


class Gateways:
    """Two gateways behind a round-robin, as a load balancer would put them: a connection refused is tried
    on the next gateway at once (HAProxy's ``retry-on conn-failure``); anything after the request was sent
    is the client's to see."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str], token: str, timeout: float) -> None:
        self.session, self.urls, self.timeout = session, urls, timeout
        self.headers = {"Authorization": f"Bearer {token}"}
        self._next = itertools.cycle(range(len(urls)))

    async def call(self, op: Op, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        tries = len(self.urls)
        result: Any = None
        while True:
            url = self.urls[next(self._next)]
            try:
                async with self.session.request(method, url + path, json=body, headers=self.headers,
                                                timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                    op.status = resp.status
                    result = await resp.json(content_type=None) if resp.status != 204 else None
                    if resp.status >= 400:
                        op.code = (result or {}).get("error", {}).get("code", "?") if isinstance(result, dict) \
                            else "?"
                break
            except aiohttp.ClientConnectorError:
                tries -= 1
                if tries:
                    continue
                op.code = "connection_refused"
                break
            except TimeoutError:
                op.code = "hung"
                break
            except (aiohttp.ClientError, ValueError) as exc:
                op.code = f"cut:{type(exc).__name__}"
                break
        op.ended = time.monotonic()
        return result


class Load:
    """``clients`` tasks writing, reading and churning their own keys until ``stop``."""

    def __init__(self, gateways: Gateways, clients: int, pause: float) -> None:
        self.gw, self.clients, self.pause = gateways, clients, pause
        self.ledger = Ledger()
        self.window = "steady"
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(n)) for n in range(self.clients)]
        # three probers a service: a call lost in a killed process waits out its timeout, the others go on
        self._tasks += [asyncio.create_task(self._probe(p)) for p in ("/v1/pki/cas?limit=1", "/v1/leases?limit=1")
                        for _ in range(3)]

    async def stop(self) -> None:
        self.ledger.ended = time.monotonic()
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def _op(self, kind: str, key: str, value: str | None = None) -> Op:
        op = Op(kind, key, self.window, time.monotonic(), value=value)
        self.ledger.ops.append(op)
        return op

    async def _resync(self, key: str, unknown: list[str]) -> tuple[int, str | None]:
        """After writes of unknown outcome: read until answered (a minute at most: a platform that stays
        away fails the run rather than hanging it); which of them were applied."""
        for _ in range(600):
            op = self._op("read", key)
            got = await self.gw.call(op, "GET", f"/v1/secrets/{key}")
            if op.ok:
                version, value = int(got["version"]), got["value"]
                if value in unknown:
                    self.ledger.applied[(key, version)] = (value, op.window)
                return version, value
            if op.status == 404:
                return 0, None
            await asyncio.sleep(0.1)
        raise RuntimeError(f"chaos: {key} unreadable for a minute after a fault")

    async def _client(self, n: int) -> None:
        keys = [f"chaos/c{n}/k{j}" for j in range(4)]
        self.ledger.keys.update(keys)
        known: dict[str, tuple[int, str | None]] = {k: (0, None) for k in keys}
        unknown: dict[str, list[str]] = defaultdict(list)
        churn = 0
        while not self._stop.is_set():
            await asyncio.sleep(self.pause)
            key = secrets.choice(keys)
            if unknown[key]:
                known[key] = await self._resync(key, unknown[key])
                unknown[key].clear()
            roll = secrets.randbelow(100)
            if roll < 50:
                version, _ = known[key]
                value = secrets.token_hex(8)
                op = self._op("write", key, value)
                got = await self.gw.call(op, "PUT", f"/v1/secrets/{key}",
                                         {"value": value, "expected_version": version})
                if op.ok:
                    op.version = int(got["version"])
                    self.ledger.acked[(key, op.version)] = (value, op.window)
                    known[key] = (op.version, value)
                elif op.failed:
                    unknown[key].append(value)
                elif op.status == 409:  # what this client knew is stale: a write it gave up on was applied
                    unknown[key].append("")
            elif roll < 85:
                op = self._op("read", key)
                got = await self.gw.call(op, "GET", f"/v1/secrets/{key}")
                if op.ok and (int(got["version"]), got["value"]) != known[key]:
                    self.ledger.wrong_reads.append(op)
            else:
                churn += 1
                await self._churn(f"chaos/c{n}/d{churn}")

    async def _churn(self, key: str) -> None:
        """A key created and deleted at once: the create and the delete each an event."""
        value = secrets.token_hex(8)
        op = self._op("create", key, value)
        got = await self.gw.call(op, "PUT", f"/v1/secrets/{key}", {"value": value, "expected_version": 0})
        if op.failed:
            version, _ = await self._resync(key, [value])
            if not version:
                return
        elif op.ok:
            self.ledger.acked[(key, int(got["version"]))] = (value, op.window)
        else:
            return
        for _ in range(300):  # until answered, even after the load was told to stop (then a stray event)
            op = self._op("delete", key)
            await self.gw.call(op, "DELETE", f"/v1/secrets/{key}")
            if op.ok or op.status == 404:  # 404: an earlier try of this delete was applied
                self.ledger.deleted[key] = op.window
                return
            await asyncio.sleep(0.1)

    async def _probe(self, path: str) -> None:
        """A service the secret load doesn't touch (the PKI, the lease service): one list every 100 ms."""
        while not self._stop.is_set():
            await self.gw.call(self._op("probe", path), "GET", path)
            await asyncio.sleep(0.1)


@dataclass
class Delivery:
    webhook_id: str  # the header: one per delivery, the same on every retry
    hook: str
    event_id: str
    event_type: str
    path: str
    version: int | None
    at: float


class Receiver:
    """The webhook subscribers: every delivery recorded, answered 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._runner: web.AppRunner | None = None

    async def _receive(self, request: web.Request) -> web.Response:
        event = await request.json()
        data = event.get("data") or {}
        self.deliveries.append(Delivery(request.headers.get("webhook-id", ""), request.match_info["hook"],
                                        event["id"], event["type"], data.get("path", ""), data.get("version"),
                                        time.monotonic()))
        return web.Response(text="ok")

    async def start(self, port: int) -> None:
        app = web.Application()
        app.router.add_post("/{hook}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
