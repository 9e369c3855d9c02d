"""The transactional outbox and its relay.

``add(conn, event)`` inside the transaction of the state change; the relay
claims unsent rows with ``FOR UPDATE SKIP LOCKED`` (so any number of replicas
share the work without double-publishing in the normal case), publishes the
batch on a confirm channel at once (frames in order, confirms awaited
together: ``Bus.publish_many``), and marks the confirmed ones sent in one
statement of the same transaction; a row the broker did not confirm waits for
the next batch. A crash between publish and commit re-sends: consumers dedupe
on the event id (``inbox``). A rolled-back change never reaches the table,
and rows written while RabbitMQ is down wait until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
import structlog

from shared.bus import Bus
from shared.contracts import event_types
from shared.contracts.events import Event
from shared.db.listen import Listener

log = structlog.get_logger("coffer.outbox")


def _channel(schema: str) -> str:
    return f"coffer_outbox_{schema}"


async def add(conn: asyncpg.Connection, event: Event, *, schema: str) -> None:
    """Record ``event`` in the current transaction (the caller owns the transaction); ``internal_error`` if its
    ``data`` is not what its type's description says (``shared.contracts.event_types``)."""
    event_types.check(event.type, event.data)
    # The notification is delivered at commit only; it wakes the relay without
    # waiting for its poll. Row and notification in one round trip.
    await conn.execute(
        "WITH row AS (INSERT INTO outbox (id, type, tenant_id, request_id, occurred_at, data) "
        "VALUES ($1, $2, $3, $4, $5, $6)) SELECT pg_notify($7, '')",
        event.id, event.type, event.tenant_id, event.request_id, event.occurred_at,
        event.model_dump(mode="json")["data"], _channel(schema),
    )


class OutboxRelay:
    """Publishes a schema's outbox rows, in order, until each is confirmed."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        schema: str,
        *,
        batch: int = 100,
        poll_interval: float = 1.0,
        keep_sent_hours: int = 24,
    ) -> None:
        self.pool = pool
        self.bus = bus
        self.schema = schema
        self.batch = batch
        self.poll_interval = poll_interval
        self.keep_sent_hours = keep_sent_hours
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener = Listener(pool, _channel(schema), self._wake.set)
        #: the last batch stopped at a row the bus would not take.
        self.stalled = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self.schema}")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._listener.close()

    async def backlog(self) -> int:
        """Rows not yet confirmed by the broker."""
        return int(await self.pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))

    async def run_once(self) -> int:
        """Publish one batch; returns how many rows were confirmed."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, type, tenant_id, request_id, occurred_at, data FROM outbox "
                "WHERE sent_at IS NULL ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.batch,
            )
            events = [Event(id=str(row["id"]), type=row["type"], tenant_id=row["tenant_id"],
                            request_id=row["request_id"], occurred_at=row["occurred_at"], data=row["data"])
                      for row in rows]
            # the whole batch published at once and its confirms awaited together (one round trip)
            outcomes = await self.bus.publish_many(events) if events else []
            sent = [row["id"] for row, outcome in zip(rows, outcomes, strict=True) if outcome is None]
            failed = [(row["id"], outcome) for row, outcome in zip(rows, outcomes, strict=True) if outcome]
            if failed:
                # those rows wait for the next batch (consumers order nothing by arrival: events carry
                # their time, and each consumer dedupes by id)
                log.warning("outbox_publish_failed", schema=self.schema, code=failed[0][1].code, rows=len(failed))
                await conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ANY($1::uuid[])",
                                   [row_id for row_id, _ in failed])
            if sent:
                # Marking rows sent needs no flush to disk: if a crash loses the
                # mark, the rows are published again, and consumers are idempotent.
                await conn.execute("SET LOCAL synchronous_commit = off")
                await conn.execute(
                    "UPDATE outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = ANY($1::uuid[])",
                    sent,
                )
            self.stalled = len(sent) < len(rows)
            return len(sent)

    async def _run(self) -> None:
        backoff = self.poll_interval
        since_cleanup = 0.0
        while True:
            try:
                await self._listener.ensure()
                self._wake.clear()
                done = await self.run_once()
                if done == self.batch:
                    continue  # more waiting: no sleep
                if self.stalled:
                    wait, backoff = backoff, min(backoff * 2, 5.0)
                else:
                    wait, backoff = self.poll_interval, self.poll_interval
                since_cleanup += wait
                if since_cleanup > 3600:
                    since_cleanup = 0.0
                    await self.pool.execute(
                        "DELETE FROM outbox WHERE sent_at < now() - make_interval(hours => $1)",
                        self.keep_sent_hours,
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - database down etc.: back off, go on
                log.warning("outbox_relay_error", schema=self.schema, error=type(exc).__name__)
                await self._listener.close()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
