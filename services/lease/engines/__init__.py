"""Dynamic-credential engines by type (``base.Engine``)."""

from __future__ import annotations

from services.lease.engines.base import Engine
from services.lease.engines.postgresql import PostgresEngine
from services.lease.engines.rabbitmq import RabbitEngine
from services.lease.engines.redis import RedisEngine

ENGINE_TYPES: dict[str, type[Engine]] = {e.type: e for e in (PostgresEngine, RabbitEngine, RedisEngine)}
