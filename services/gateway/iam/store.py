"""What the gateway's repositories share: the pool, the schema, and events through the outbox."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.contracts.events import Event
from shared.db import outbox


class SchemaRepository:
    """A repository of the gateway's schema. Changes others must learn of (policies, bindings,
    revocations, tenants) write their event to the outbox in the same transaction."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def _event(self, conn: asyncpg.Connection, kind: str, tenant_id: str | None, request_id: str,
                     data: dict[str, Any]) -> None:
        await outbox.add(conn, Event(type=kind, tenant_id=tenant_id, request_id=request_id, data=data),
                         schema=self.schema)
