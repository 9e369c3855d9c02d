"""PostgreSQL: pools per schema, migrations, the outbox relay, the inbox, sealed keys, KEK re-wrapping."""

from shared.db import inbox, outbox, sealed_keys
from shared.db.migrations import migrate
from shared.db.outbox import OutboxRelay
from shared.db.pool import create_pool
from shared.db.rewrap import SealedColumns, by_tenant_id, has_legacy, legacy_count, rewrap_all

__all__ = ["OutboxRelay", "SealedColumns", "by_tenant_id", "create_pool", "has_legacy", "inbox", "legacy_count",
           "migrate", "outbox", "rewrap_all", "sealed_keys"]
