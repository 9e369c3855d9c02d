"""PostgreSQL: pools per schema, migrations, the outbox relay, the inbox, sealed keys."""

from shared.db import inbox, outbox, sealed_keys
from shared.db.migrations import migrate
from shared.db.outbox import OutboxRelay
from shared.db.pool import create_pool

__all__ = ["OutboxRelay", "create_pool", "inbox", "migrate", "outbox", "sealed_keys"]
