"""PostgreSQL: pools per schema, migrations, the outbox relay, the inbox, sealed keys, KEK re-wrapping."""

from shared.db import inbox, outbox, sealed_keys
from shared.db.migrations import migrate
from shared.db.outbox import OutboxRelay
from shared.db.pool import create_pool
from shared.db.rewrap import SealedColumns, rewrap_all

__all__ = ["OutboxRelay", "SealedColumns", "create_pool", "inbox", "migrate", "outbox", "rewrap_all", "sealed_keys"]
