"""This replica's event streams, fed from the event store in its one order.

The gateway consumes every event on the bus (``gateway-events``, a durable queue the replicas share: each
event is taken by one of them and stored once, ``store.EventStore``). Every replica listens for the store's
notification, reads what is new (``newer``) and offers each event to the open streams of its tenant: a
stream on any replica sees every event, with no sticky sessions and no replica that must be up for another
to stream. The hub also counts each identity's streams (``COFFER_EVENT_STREAMS`` per replica: 429
``rate_limited`` beyond), forgets events past the retention, and ends its streams when the gateway stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, defaultdict

import structlog

from services.gateway.events.store import EventStore, Stored
from services.gateway.events.stream import CHECK_EVERY, Stream
from services.gateway.iam.authorizer import RuleCache, may_see
from services.gateway.iam.domain import Principal
from services.gateway.iam.policy import IpAddress
from services.gateway.iam.revocations import Revocations
from shared.bus import Bus
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.db.listen import Listener
from shared.errors import RateLimited, ServiceUnavailable
from shared.event_filter import matches
from shared.groups import Groups

log = structlog.get_logger("coffer.gateway.events")
CONSUMER = "gateway-events"
#: how often the hub reads the store when no notification came (a lost LISTEN connection, say)
POLL_EVERY = 1.0
#: events read from the store at once
PAGE = 1000
#: the least time between two reads of the store (a burst's events go out together)
GATHER = 0.02


class EventHub:
    def __init__(self, store: EventStore, rules: RuleCache, revocations: Revocations, *, streams_per_identity: int,
                 heartbeat: float, buffer: int) -> None:
        self.store = store
        self.rules = rules
        self.revocations = revocations
        self.streams_per_identity = streams_per_identity
        self.heartbeat = heartbeat
        self.buffer = buffer
        #: the last ``seq`` offered to this replica's streams
        self.last = 0
        self._streams: dict[str, set[Stream]] = defaultdict(set)
        self._per_identity: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._closed = False
        self._listener = Listener(store.pool, store.channel, self._wake.set)
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._groups: Groups[Event, None] = Groups(store.store, name="event-store")

    async def start(self, bus: Bus) -> None:
        self.last = await self.store.last_seq()
        await bus.subscribe(CONSUMER, ["#"], self._on_event)
        self._task = asyncio.create_task(self._run(), name="event-hub")
        self._ticker = asyncio.create_task(self._tick(), name="event-hub-tick")

    async def close(self) -> None:
        """End every stream (their readers resume elsewhere with their last id), stop reading the store."""
        self._closed = True
        for streams in list(self._streams.values()):
            for stream in list(streams):
                stream.cut("shutdown")
        for task in (self._task, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._groups.close()
        await self._listener.close()

    async def _on_event(self, event: Event, ctx: RequestContext) -> None:
        """An event off the bus: stored (with whatever else arrives meanwhile) before it is acknowledged."""
        await self._groups.add(event)

    # -- streams -----------------------------------------------------------------------------

    async def open(self, who: Principal, tenant_id: str, types: tuple[str, ...], path_pattern: str | None,
                   ip: IpAddress | None) -> Stream:
        """A new stream of ``tenant_id``'s events from now on (``rate_limited`` past the identity's limit)."""
        if self._closed:  # the gateway is stopping: a stream opened now would hold up its shutdown
            raise ServiceUnavailable("the gateway is stopping; open the stream on another one")
        self._room_for(who)
        if not self._streams:  # the hub reads nothing while no stream is open: where the store is now
            self.last = max(self.last, await self.store.last_seq())
            self._room_for(who)  # others may have opened meanwhile
        stream = Stream(self, who, tenant_id, types, path_pattern, ip, self.buffer, self.last)
        self._streams[tenant_id].add(stream)
        self._per_identity[who.identity_id] += 1
        return stream

    def _room_for(self, who: Principal) -> None:
        if self._per_identity[who.identity_id] >= self.streams_per_identity:
            raise RateLimited("too many open event streams for this identity",
                              details={"limit": self.streams_per_identity, "category": "events"},
                              headers={"Retry-After": "1"})

    def close_stream(self, stream: Stream) -> None:
        streams = self._streams.get(stream.tenant_id)
        if streams is None or stream not in streams:
            return
        streams.discard(stream)
        if not streams:
            del self._streams[stream.tenant_id]
        self._per_identity[stream.who.identity_id] -= 1
        if self._per_identity[stream.who.identity_id] <= 0:
            del self._per_identity[stream.who.identity_id]

    def open_streams(self) -> int:
        return sum(len(s) for s in self._streams.values())

    # -- reading the store ----------------------------------------------------------------------

    async def _tick(self) -> None:
        """Every stream looks at its token, its connection and its heartbeat every ``CHECK_EVERY`` seconds."""
        while True:
            await asyncio.sleep(CHECK_EVERY)
            for streams in list(self._streams.values()):
                for stream in streams:
                    stream.tick()

    async def _run(self) -> None:
        purge_every = min(60.0, max(1.0, self.store.retention / 2))
        purged = read = time.monotonic()
        while True:
            try:
                await self._listener.ensure()
                # under a burst, one read per GATHER seconds: each stream then writes several events at once
                # (a stream's wake-up and write cost the same for one event as for ten); alone, at once
                if (since := time.monotonic() - read) < GATHER:
                    await asyncio.sleep(GATHER - since)
                read = time.monotonic()
                self._wake.clear()
                # no stream here: nothing to read (the first stream to open takes the store's place: ``open``)
                while self._streams and (page := await self.store.newer(self.last, PAGE)):
                    self._offer(page)
                    if len(page) < PAGE:
                        break
                if time.monotonic() - purged > purge_every:
                    purged = time.monotonic()
                    await self.store.purge()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_EVERY)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away: try again, streams wait
                log.warning("event_hub_read_failed", error=type(exc).__name__)
                await self._listener.close()
                await asyncio.sleep(POLL_EVERY)

    def _offer(self, page: list[Stored]) -> None:
        """Each tenant's events of ``page`` to its streams: filtered and judged once per view, the same bytes
        to every stream of a view (``Stream.deliver``)."""
        last = page[-1].seq
        by_tenant: dict[str, list[Stored]] = defaultdict(list)
        for event in page:
            if event.tenant_id in self._streams:
                by_tenant[event.tenant_id].append(event)
        for tenant_id, events in by_tenant.items():
            views: dict[tuple[object, ...], list[Stream]] = defaultdict(list)
            for stream in self._streams[tenant_id]:
                views[stream.view].append(stream)
            for streams in views.values():
                first = streams[0]
                matching = [e for e in events if matches(first.types, first.path_pattern, e.type, e.data)]
                payload = self._judged(first, matching)
                for stream in streams:
                    stream.deliver(matching, payload, last)
        self.last = last

    def _judged(self, stream: Stream, events: list[Stored]) -> bytes | None:
        """The frames of the events ``stream``'s view may see now, or ``None`` when its rules are not at hand
        (its streams' loops then wait for them)."""
        rules = self.rules.cached(stream.who.identity_id)
        if rules is None:
            return None
        who = stream.who
        return b"".join(e.frame for e in events
                        if may_see(who.scopes, rules, e.resource, ip=stream.ip, mfa_at=who.mfa_at))
