"""SQL of policies and bindings; every change publishes ``policy.*`` so replicas drop cached rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.iam.store import SchemaRepository
from shared.errors import BindingConflict, BindingNotFound, IdentityNotFound, NameConflict, PolicyInUse, PolicyNotFound

#: SQL: the binding ``b`` is in force (standing, or a grant whose end has not come)
_IN_FORCE = "(b.expires_at IS NULL OR b.expires_at > now())"


class PolicyRepository(SchemaRepository):
    async def create_policy(self, tenant_id: str, row: dict[str, Any], request_id: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                created = await conn.fetchrow(
                    "INSERT INTO policies (id, tenant_id, name, description, rules, request)"
                    " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                    row["id"], tenant_id, row["name"], row["description"], row["rules"], row.get("request"))
            except asyncpg.UniqueViolationError:
                raise NameConflict("a policy with this name exists", details={"name": row["name"]}) from None
            await self._event(conn, "policy.created", tenant_id, request_id, {"id": row["id"], "name": row["name"]})
            return created

    async def policy(self, tenant_id: str, name: str) -> asyncpg.Record:
        row = await self.pool.fetchrow("SELECT * FROM policies WHERE tenant_id = $1 AND name = $2", tenant_id, name)
        if row is None:
            raise PolicyNotFound(details={"name": name})
        return row

    async def list_policies(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM policies WHERE tenant_id = $1 AND ($2::text IS NULL OR name > $2) ORDER BY name LIMIT $3",
            tenant_id, after, limit)

    async def replace_policy(self, tenant_id: str, name: str, description: str | None, rules: Any,
                             request_id: str, request: dict[str, Any] | None = None) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE policies SET description = $3, rules = $4, request = $5, updated_at = now()"
                " WHERE tenant_id = $1 AND name = $2 RETURNING *", tenant_id, name, description, rules, request)
            if row is None:
                raise PolicyNotFound(details={"name": name})
            await self._event(conn, "policy.updated", tenant_id, request_id, {"id": row["id"], "name": name})
            return row

    async def delete_policy(self, tenant_id: str, name: str, request_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT id FROM policies WHERE tenant_id = $1 AND name = $2 FOR UPDATE",
                                      tenant_id, name)
            if row is None:
                raise PolicyNotFound(details={"name": name})
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM bindings b WHERE b.policy_id = $1 AND {_IN_FORCE})",
                                   row["id"]):
                raise PolicyInUse("the policy is bound to identities", details={"name": name})
            await conn.execute("DELETE FROM bindings WHERE policy_id = $1", row["id"])  # grants that ended
            await conn.execute("DELETE FROM policies WHERE id = $1", row["id"])
            await self._event(conn, "policy.deleted", tenant_id, request_id, {"id": row["id"], "name": name})

    async def rules_for(self, identity_id: str) -> list[tuple[Any, datetime | None]]:
        """The rules of every policy bound to ``identity_id``, each with its binding's end (``None``: a standing
        binding; a grant's ``expires_at``, which the decision itself compares with the clock)."""
        rows = await self.pool.fetch(
            f"SELECT p.rules, b.expires_at FROM bindings b JOIN policies p ON p.id = b.policy_id"
            f" WHERE b.identity_id = $1 AND {_IN_FORCE}", identity_id)
        return [(r["rules"], r["expires_at"]) for r in rows]

    async def policy_names_for(self, identity_id: str) -> list[str]:
        """The names of the policies bound to ``identity_id`` now (grants until their end), in name order."""
        rows = await self.pool.fetch(
            "SELECT DISTINCT p.name FROM bindings b JOIN policies p ON p.id = b.policy_id WHERE b.identity_id = $1"
            f" AND {_IN_FORCE} ORDER BY p.name", identity_id)
        return [r["name"] for r in rows]

    async def create_binding(self, tenant_id: str, binding_id: str, policy: str, identity_id: str,
                             request_id: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            policy_id = await conn.fetchval("SELECT id FROM policies WHERE tenant_id = $1 AND name = $2",
                                            tenant_id, policy)
            if policy_id is None:
                raise PolicyNotFound(details={"name": policy})
            if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM identities WHERE id = $1 AND tenant_id = $2)",
                                       identity_id, tenant_id):
                raise IdentityNotFound(details={"identity_id": identity_id})
            try:
                row = await conn.fetchrow(
                    "INSERT INTO bindings (id, tenant_id, policy_id, identity_id) VALUES ($1, $2, $3, $4)"
                    " RETURNING id, identity_id, created_at, expires_at, request_id, $5::text AS policy",
                    binding_id, tenant_id, policy_id, identity_id, policy)
            except asyncpg.UniqueViolationError:
                raise BindingConflict("the identity is already bound to this policy",
                                      details={"policy": policy, "identity_id": identity_id}) from None
            # who a policy applies to changed: replicas drop their cached decisions
            await self._event(conn, "policy.updated", tenant_id, request_id,
                              {"id": policy_id, "name": policy, "binding_id": binding_id})
            return row

    _BINDING = ("SELECT b.id, b.identity_id, b.created_at, b.expires_at, b.request_id, p.name AS policy"
                " FROM bindings b JOIN policies p ON p.id = b.policy_id")

    async def binding(self, tenant_id: str, binding_id: str) -> asyncpg.Record:
        """A binding in force (a grant whose end has come is gone, whether the sweeper deleted it yet or not)."""
        row = await self.pool.fetchrow(f"{self._BINDING} WHERE b.tenant_id = $1 AND b.id = $2 AND {_IN_FORCE}",
                                       tenant_id, binding_id)
        if row is None:
            raise BindingNotFound(details={"binding_id": binding_id})
        return row

    async def list_bindings(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"{self._BINDING} WHERE b.tenant_id = $1 AND ($2::text IS NULL OR b.id > $2) AND {_IN_FORCE}"
            " ORDER BY b.id LIMIT $3",
            tenant_id, after, limit)

    async def delete_binding(self, tenant_id: str, binding_id: str, request_id: str) -> None:
        """Delete a standing binding (a grant ends through its access request: ``AccessRepository.end``)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM bindings b USING policies p WHERE b.tenant_id = $1 AND b.id = $2 AND p.id = b.policy_id"
                " RETURNING p.id, p.name", tenant_id, binding_id)
            if row is None:
                raise BindingNotFound(details={"binding_id": binding_id})
            await self._event(conn, "policy.updated", tenant_id, request_id,
                              {"id": row["id"], "name": row["name"], "binding_id": binding_id})

