"""One open event stream: its filters, its bounded buffer, and how it is written (api.md §12).

Streams with the same view (tenant, identity, scopes, client address, MFA time, filters) see the same
events: the hub filters and judges each event once per view — may this token list the event's resource
*now* (``authorizer.may_see``, the rule webhook subscriptions follow) — and hands each stream of the view
the same bytes (``deliver``). A stream that is *live* (caught up, nothing queued) writes them to its
connection at once, with no task switch; otherwise they are queued, and the stream's loop (``_pump``)
judges and writes them in order (a resumed stream's replay, a view whose rules this replica has not
loaded yet). The loop also writes control events and the heartbeat, and ends the stream when its token
expires or is revoked (the hub's tick wakes it every ``CHECK_EVERY`` seconds).

Bounded: a stream whose bytes waiting for the reader (queued here, or written and still in the
connection's buffer) would pass ``limit`` is cut: its loop stops, a last ``event: reset`` goes after what
was already written, and the connection closes, so the reader resumes from the last id it got.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
import structlog
from aiohttp import web

from services.gateway.events.store import Stored
from services.gateway.iam.authorizer import may_see
from services.gateway.iam.domain import Principal
from services.gateway.iam.policy import IpAddress, Rule
from shared.errors import CofferError
from shared.event_filter import matches

if TYPE_CHECKING:
    from services.gateway.events.hub import EventHub

log = structlog.get_logger("coffer.gateway.events")
#: how often a quiet stream looks at its token (revoked?) and its connection (gone?)
CHECK_EVERY = 0.5
#: how long a cut reader has to take its last ``reset`` before the connection is dropped
CUT_GRACE = 10.0
HEARTBEAT = b": keep-alive\n\n"
#: events read at once when a stream resumes
REPLAY_PAGE = 500


def control(kind: str, **data: str) -> bytes:
    """An event of the stream itself (no ``id``: the reader's last id stays the last event it got)."""
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class Stream:
    def __init__(self, hub: EventHub, who: Principal, tenant_id: str, types: tuple[str, ...],
                 path_pattern: str | None, ip: IpAddress | None, limit: int, cursor: int) -> None:
        self.hub = hub
        self.who = who
        self.tenant_id = tenant_id
        self.types = types
        self.path_pattern = path_pattern
        self.ip = ip
        self.limit = limit
        #: what decides which events this stream gets: streams with the same view get the same bytes
        self.view = (who.identity_id, who.scopes, ip, who.mfa_at, types, path_pattern)
        #: the last ``seq`` this stream has dealt with (sent, filtered out or withheld)
        self.cursor = cursor
        self._queue: deque[Stored] = deque()
        self._pending = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._chunked = True
        #: caught up, nothing queued: the hub writes to it directly
        self.live = False
        self.sent_at = time.monotonic()
        #: why the hub ended the stream (``slow_reader``, ``shutdown``), if it did
        self.cut_reason: str | None = None

    # -- the hub's side (never waits) -----------------------------------------------------------

    def deliver(self, matching: list[Stored], payload: bytes | None, last_seq: int) -> None:
        """A page's events that pass the view's filters, and the bytes of those it may see (``None``: not judged
        yet). Written at once when the stream is live; queued for its loop otherwise (in order)."""
        if self.cut_reason is not None:
            return
        transport = self._transport
        # queued when not judged yet, behind others, or overlapping what a replay has sent already (a resumed
        # stream can be ahead of the hub: ``_enqueue`` drops what it has)
        if (payload is None or not self.live or self._queue or transport is None
                or (matching and matching[0].seq <= self.cursor)):
            for event in matching:
                self._enqueue(event)
            return
        self.cursor = max(self.cursor, last_seq)
        if not payload or transport.is_closing():
            return
        if transport.get_write_buffer_size() + len(payload) > self.limit:
            self.cut("slow_reader")
            return
        transport.write(b"%x\r\n%b\r\n" % (len(payload), payload) if self._chunked else payload)
        self.sent_at = time.monotonic()

    def _enqueue(self, event: Stored) -> None:
        if event.seq <= self.cursor:
            return
        if self._backlog() + len(event.frame) > self.limit:
            self.cut("slow_reader")
            return
        self._queue.append(event)
        self._pending += len(event.frame)
        self._wake.set()

    def _backlog(self) -> int:
        """Bytes waiting for the reader: offered and not written yet, and written but not yet taken by the
        kernel (a reader that reads nothing leaves them in the transport's buffer)."""
        transport = self._transport
        return self._pending + (transport.get_write_buffer_size() if transport is not None else 0)

    def tick(self) -> None:
        """The hub's clock: look at the token, the connection and the heartbeat now."""
        self._wake.set()

    def cut(self, reason: str) -> None:
        """End the stream from outside its loop (the loop may be stuck writing to a reader that reads nothing)."""
        if self.cut_reason is None:
            self.cut_reason = reason
            if self._task is not None:
                self._task.cancel()

    # -- the handler's side -----------------------------------------------------------------------

    async def run(self, request: web.Request, response: web.StreamResponse, after: int | None,
                  reset: bool) -> None:
        """Write the stream until it ends; ``after``: resume after that ``seq``; ``reset``: the id asked for
        is not kept (say so first)."""
        gone = _gone(request)
        self._transport = request.transport
        self._chunked = response.chunked  # HTTP/1.1 (routes.py): the hub's writes are chunks, as aiohttp's are
        _bound_kernel_buffer(request, self.limit)
        self._task = asyncio.create_task(self._pump(response, after, reset, gone), name="event-stream")
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self.cut_reason is None:  # the handler itself was cancelled (shutdown): the loop goes too
                self._task.cancel()
                raise
        except ConnectionError:  # the reader went away mid-write
            return
        except Exception as exc:  # noqa: BLE001 - the headers are sent: the stream ends, the reader resumes
            log.warning("event_stream_failed", error=type(exc).__name__)
            return
        if self.cut_reason == "slow_reader":
            await self._last_reset(request, response)

    async def _last_reset(self, request: web.Request, response: web.StreamResponse) -> None:
        """Queue the last ``reset`` after what the reader has not taken yet, and drop the connection if it
        does not take it within ``CUT_GRACE`` seconds."""
        transport = request.transport
        if transport is None:
            return
        asyncio.get_running_loop().call_later(CUT_GRACE, transport.abort)
        with contextlib.suppress(Exception):
            # the frame is handed to the transport at once; only the wait for the reader is cut short
            await asyncio.wait_for(response.write(control("reset", reason="too_far_behind")), 0.1)
        log.info("event_stream_cut", identity_id=self.who.identity_id, reason=self.cut_reason)

    async def _pump(self, response: web.StreamResponse, after: int | None, reset: bool,
                    gone: Callable[[], bool]) -> None:
        if reset:
            await response.write(control("reset", reason="not_kept"))
        if after is not None:
            await self._replay(response, after)
        while True:
            if not self._queue:
                self.live = True  # from here the hub writes what comes, until something is queued again
                await self._wake.wait()  # an event queued, or the hub's tick (every CHECK_EVERY)
            self._wake.clear()
            if gone():
                return
            if (ended := self._token_ended()) is not None:
                self.live = False
                await response.write(ended)
                return
            self.live = False  # while this batch is judged and written, what comes is queued behind it
            frames = await self._allowed(self._take())
            if time.monotonic() - self.sent_at >= self.hub.heartbeat:
                frames.append(HEARTBEAT)
            if frames:
                self.sent_at = time.monotonic()
                await response.write(b"".join(frames))

    async def _replay(self, response: web.StreamResponse, after: int) -> None:
        """The kept events after ``after``, then the live ones (those the hub offered meanwhile that were
        replayed already are skipped by ``cursor``)."""
        self.cursor = after
        while page := await self.hub.store.after(self.tenant_id, self.cursor, REPLAY_PAGE):
            wanted = [e for e in page if matches(self.types, self.path_pattern, e.type, e.data)]
            frames = await self._allowed(wanted)
            self.cursor = page[-1].seq
            if frames:
                await response.write(b"".join(frames))

    def _take(self) -> list[Stored]:
        events = [e for e in self._queue if e.seq > self.cursor]
        self._queue.clear()
        self._pending = 0
        if events:
            self.cursor = events[-1].seq
        return events

    async def _allowed(self, events: list[Stored]) -> list[bytes]:
        """The frames of the events this token may learn of now (its rules as this replica has them:
        a policy change reaches them with the ``policy.*`` event)."""
        if not events:
            return []
        rules: tuple[Rule, ...] = await self.hub.rules.rules(self.who.identity_id)
        who = self.who
        return [e.frame for e in events
                if may_see(who.scopes, rules, e.resource, ip=self.ip, mfa_at=who.mfa_at)]

    def _token_ended(self) -> bytes | None:
        try:
            self.hub.revocations.check(self.who)
        except CofferError as exc:
            return control("token_revoked", code=exc.code, message=exc.message)
        if time.time() >= self.who.expires_at.timestamp():
            return control("token_expired", code="token_expired", message="the stream's token has expired")
        return None


def _bound_kernel_buffer(request: web.Request, limit: int) -> None:
    """The kernel's send buffer of a stream's connection, bounded too: left to itself, Linux grows it to 4 MiB
    for a reader that reads nothing, all of it out of sight of ``limit``."""
    sock = request.transport.get_extra_info("socket") if request.transport is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(16384, min(262144, limit // 4)))


def _gone(request: web.Request) -> Callable[[], bool]:
    """Has the reader closed the connection? (aiohttp drops the transport when it does.)"""
    return lambda: request.transport is None or request.transport.is_closing()
