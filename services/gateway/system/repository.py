"""The gateway's own operations in SQL: the first initialisation, maintenance mode."""

from __future__ import annotations

from typing import Any

from services.gateway.iam.store import SchemaRepository
from shared.contracts.events import Event
from shared.db import outbox

_INIT_LOCK = 0x5157_1417  # serialises POST /v1/sys/init across replicas


class SystemRepository(SchemaRepository):
    async def initialise(
        self,
        *,
        tenant: dict[str, Any],
        identity: dict[str, Any],
        policy: dict[str, Any],
        binding_id: str,
    ) -> bool:
        """Create the root tenant, admin identity, policy and binding; ``False`` if not empty."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _INIT_LOCK)
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM tenants)"):
                return False
            await conn.execute(
                "INSERT INTO tenants (id, name, kind) VALUES ($1, $2, $3)",
                tenant["id"], tenant["name"], tenant["kind"],
            )
            await conn.execute(
                "INSERT INTO identities (id, tenant_id, name, kind, allowed_scopes, partner_admin,"
                " client_id, secret_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                identity["id"], tenant["id"], identity["name"], identity["kind"],
                list(identity["allowed_scopes"]), identity["partner_admin"],
                identity["client_id"], identity["secret_hash"],
            )
            await conn.execute(
                "INSERT INTO policies (id, tenant_id, name, description, rules)"
                " VALUES ($1, $2, $3, $4, $5)",
                policy["id"], tenant["id"], policy["name"], policy["description"], policy["rules"],
            )
            await conn.execute(
                "INSERT INTO bindings (id, tenant_id, policy_id, identity_id) VALUES ($1, $2, $3, $4)",
                binding_id, tenant["id"], policy["id"], identity["id"],
            )
        return True


    async def maintenance(self) -> dict[str, Any]:
        value = await self.pool.fetchval("SELECT value FROM system_state WHERE key = 'maintenance'")
        return dict(value) if value else {"enabled": False, "message": None}

    async def set_maintenance(self, enabled: bool, message: str | None, request_id: str) -> None:
        """Persist the switch and tell every replica (``system.maintenance``)."""
        value = {"enabled": enabled, "message": message}
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO system_state (key, value) VALUES ('maintenance', $1)"
                " ON CONFLICT (key) DO UPDATE SET value = $1, updated_at = now()", value)
            await outbox.add(conn, Event(type="system.maintenance", request_id=request_id, data=value),
                             schema=self.schema)
