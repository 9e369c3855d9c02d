"""The events of the last ``COFFER_EVENT_RETENTION``, in one order: what every stream reads and resumes from.

Each event is written once, by whichever gateway replica takes it off its queue (``gateway-events``, one
durable queue the replicas share), in a group commit with the others arriving at the same time. A group
takes its numbers (``seq``) under the row lock of ``event_seq``, so the order of ``seq`` is the order of
commits: a reader that has seen ``seq`` n has seen every smaller one. The commit notifies every replica
(``pg_notify``), which reads what is new and hands it to its streams (``hub.EventHub``). A stream's
``Last-Event-ID`` (an event's id) is a place in that order on any replica.

Events without a tenant (``system.*``) are not streamed, and ``tenant.deleted`` takes its tenant's events
with it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from shared.contracts.events import Event, resource_of


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored event, as every stream on this replica takes it: filtered by ``type`` and ``data``,
    judged by ``resource``, sent as ``frame`` (encoded once for all streams)."""

    seq: int
    id: str
    tenant_id: str
    type: str
    data: dict[str, Any]
    resource: str
    frame: bytes = field(repr=False)

    @classmethod
    def of(cls, row: asyncpg.Record) -> Stored:
        body: str = row["body"]
        event = Event.model_validate(orjson.loads(body))
        # the body holds no line break (compact JSON): one ``data:`` line
        frame = f"id: {event.id}\nevent: {event.type}\ndata: {body}\n\n".encode()
        return cls(row["seq"], event.id, row["tenant_id"], event.type, event.data, resource_of(event), frame)


def body_of(event: Event) -> str:
    """The event as a webhook receives it (``{id, type, tenant_id, occurred_at, request_id, data}``)."""
    return orjson.dumps(event.model_dump(mode="json")).decode()


class EventStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, retention: int) -> None:
        self.pool = pool
        self.schema = schema
        self.retention = retention
        self.channel = f"coffer_events_{schema}"

    async def store(self, events: list[Event]) -> list[None]:
        """Write a group of events in one transaction (an id seen before is skipped), then wake every replica."""
        kept: dict[str, Event] = {}
        gone: set[str] = set()
        for event in events:
            if event.tenant_id is None:
                continue
            if event.type == "tenant.deleted":
                gone.add(event.tenant_id)
            else:
                kept.setdefault(event.id, event)
        async with self.pool.acquire() as conn, conn.transaction():
            if kept:
                last = await conn.fetchval("UPDATE event_seq SET last = last + $1 RETURNING last", len(kept))
                first = last - len(kept) + 1
                rows = list(kept.values())
                await conn.execute(
                    "INSERT INTO events (seq, id, tenant_id, type, body) SELECT * FROM"
                    " unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[]) ON CONFLICT (id) DO NOTHING",
                    list(range(first, last + 1)), [uuid.UUID(e.id) for e in rows], [e.tenant_id for e in rows],
                    [e.type for e in rows], [body_of(e) for e in rows])
            if gone:
                await conn.execute("DELETE FROM events WHERE tenant_id = ANY($1::text[])", list(gone))
            if kept:
                await conn.execute("SELECT pg_notify($1, '')", self.channel)
        return [None] * len(events)

    async def newer(self, seq: int, limit: int) -> list[Stored]:
        """Every tenant's events after ``seq``, in order (what this replica's streams have not seen)."""
        rows = await self.pool.fetch(
            "SELECT seq, tenant_id, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", seq, limit)
        return [Stored.of(r) for r in rows]

    async def after(self, tenant_id: str, seq: int, limit: int) -> list[Stored]:
        """A tenant's events after ``seq`` that are still kept, in order (a stream resuming)."""
        rows = await self.pool.fetch(
            "SELECT seq, tenant_id, body FROM events WHERE tenant_id = $1 AND seq > $2"
            " AND stored_at > now() - make_interval(secs => $3) ORDER BY seq LIMIT $4",
            tenant_id, seq, float(self.retention), limit)
        return [Stored.of(r) for r in rows]

    async def seq_of(self, tenant_id: str, event_id: uuid.UUID) -> int | None:
        """Where the tenant's event ``event_id`` is in the order, if it is still kept (another tenant's id,
        or one past the retention, is not: the stream starts with ``event: reset``)."""
        seq = await self.pool.fetchval(
            "SELECT seq FROM events WHERE id = $1 AND tenant_id = $2"
            " AND stored_at > now() - make_interval(secs => $3)", event_id, tenant_id, float(self.retention))
        return int(seq) if seq is not None else None

    async def last_seq(self) -> int:
        return int(await self.pool.fetchval("SELECT last FROM event_seq"))

    async def purge(self) -> int:
        """Forget the events older than the retention (any replica may: deleting twice deletes nothing)."""
        status = await self.pool.execute(
            "DELETE FROM events WHERE stored_at < now() - make_interval(secs => $1)", float(self.retention))
        return int(status.split()[-1])
