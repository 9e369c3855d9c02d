"""The inbox: at-least-once delivery, exactly-once effect.

Call ``claim`` in the same transaction as the event's effect; ``False`` means
the event was already processed and the handler should do nothing (and the
message is acked).
"""

from __future__ import annotations

import uuid

import asyncpg


async def claim(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Record that ``consumer`` handles ``event_id``; ``False`` if it already did."""
    status = await conn.execute(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        consumer, uuid.UUID(event_id),
    )
    return bool(status.endswith(" 1"))
