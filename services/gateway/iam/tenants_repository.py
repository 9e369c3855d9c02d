"""SQL of tenants: the tree of tenants, their quotas, and their deletion (``tenant.deleted``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.gateway.iam.store import SchemaRepository
from shared.errors import Forbidden, NameConflict, TenantNotFound

_SUBTREE = ("WITH RECURSIVE sub AS (SELECT id FROM tenants WHERE id = $1"
            " UNION SELECT t.id FROM tenants t JOIN sub ON t.parent_id = sub.id)")


class TenantRepository(SchemaRepository):
    async def tenant(self, tenant_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)

    async def id_by_name(self, name: str) -> str | None:
        """The id of the tenant called ``name`` (names are unique across tenants), or ``None``."""
        return await self.pool.fetchval("SELECT id FROM tenants WHERE name = $1", name)

    async def id_in_reach(self, name: str, root_id: str) -> str | None:
        """The id of the tenant called ``name`` if it is ``root_id`` or below it, else ``None``: one query over
        ``root_id``'s subtree, the same work whether some other tenant is called so or not."""
        return await self.pool.fetchval(f"{_SUBTREE} SELECT t.id FROM sub JOIN tenants t USING (id) WHERE t.name = $2",
                                        root_id, name)

    async def root_tenant_id(self) -> str | None:
        return await self.pool.fetchval("SELECT id FROM tenants WHERE parent_id IS NULL")

    async def has_children(self, tenant_id: str) -> bool:
        return bool(await self.pool.fetchval("SELECT EXISTS (SELECT 1 FROM tenants WHERE parent_id = $1)", tenant_id))

    async def in_subtree(self, root_id: str, tenant_id: str) -> bool:
        """Is ``tenant_id`` ``root_id`` or one of its descendants?"""
        return bool(await self.pool.fetchval(f"{_SUBTREE} SELECT EXISTS (SELECT 1 FROM sub WHERE id = $2)",
                                             root_id, tenant_id))

    async def create_tenant(self, row: dict[str, Any]) -> asyncpg.Record:
        try:
            return await self.pool.fetchrow(
                "INSERT INTO tenants (id, name, kind, parent_id, quotas, secret_retention, require_mfa, kms_key)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                row["id"], row["name"], row["kind"], row["parent_id"], row["quotas"], row.get("secret_retention"),
                bool(row.get("require_mfa")), row.get("kms_key"))
        except asyncpg.UniqueViolationError:
            raise NameConflict("a tenant with this name exists", details={"name": row["name"]}) from None

    async def discard_new_tenant(self, tenant_id: str) -> None:
        """A tenant just made whose creation failed after its row (its KMS key refused): gone again."""
        await self.pool.execute("DELETE FROM tenants WHERE id = $1 AND NOT EXISTS"
                                " (SELECT 1 FROM identities WHERE tenant_id = $1)", tenant_id)

    async def list_tenants(self, root_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"{_SUBTREE} SELECT t.* FROM tenants t JOIN sub ON sub.id = t.id"
            " WHERE ($2::text IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3", root_id, after, limit)

    async def update_tenant(self, tenant_id: str, fields: dict[str, Any],
                            quota_patch: dict[str, Any] | None) -> asyncpg.Record:
        """Set ``fields`` (name, kind, secret_retention, require_mfa, kms_key); merge ``quota_patch`` into the quotas
        (RFC 7396: a null removes a key, ``{}`` from ``"quotas": null`` removes them all)."""
        args: list[Any] = [tenant_id, fields.get("name"), fields.get("kind")]
        quotas = "quotas" if quota_patch is None else (
            "'{}'::jsonb" if not quota_patch else f"jsonb_strip_nulls(quotas || ${len(args) + 1}::jsonb)")
        if quota_patch:
            args.append(quota_patch)
        retention = "secret_retention"
        if "secret_retention" in fields:  # sent: a duration, or null for the platform's default
            args.append(fields["secret_retention"])
            retention = f"${len(args)}::text"
        args.append(fields.get("require_mfa"))
        require_mfa = f"coalesce(${len(args)}::boolean, require_mfa)"
        kms_key = "kms_key"
        if "kms_key" in fields:  # sent: a key, or null for none
            args.append(fields["kms_key"])
            kms_key = f"${len(args)}::jsonb"
        try:
            row = await self.pool.fetchrow(
                f"UPDATE tenants SET name = coalesce($2, name), kind = coalesce($3, kind), quotas = {quotas},"
                f" secret_retention = {retention}, require_mfa = {require_mfa}, kms_key = {kms_key}, updated_at = now()"
                " WHERE id = $1 RETURNING *", *args)
        except asyncpg.UniqueViolationError:
            raise NameConflict("a tenant with this name exists", details={"name": fields.get("name")}) from None
        if row is None:
            raise TenantNotFound(details={"tenant_id": tenant_id})
        return row

    async def delete_tenant(self, tenant_id: str, request_id: str,
                            shred: Callable[[], Awaitable[None]] | None = None) -> None:
        """Delete the tenant and its policies; ``tenant.deleted`` tells every service to destroy its data.

        ``shred`` destroys the tenant's keys in every service's keyring: it runs inside the transaction that
        deletes the tenant, after the checks and before any row is removed; if it fails, nothing is deleted
        (keys already destroyed stay destroyed: the tenant's values are unreadable, and deleting it again
        finishes the job)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT id, name, parent_id FROM tenants WHERE id = $1 FOR UPDATE", tenant_id)
            if row is None:
                raise TenantNotFound(details={"tenant_id": tenant_id})
            busy = await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM tenants WHERE parent_id = $1)"
                " OR EXISTS (SELECT 1 FROM identities WHERE tenant_id = $1)", tenant_id)
            if busy:
                raise Forbidden("a tenant with child tenants or identities can't be deleted",
                                details={"tenant_id": tenant_id})
            if shred is not None:
                await shred()
            await conn.execute("DELETE FROM bindings WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM access_requests WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM policies WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM revoked_tokens WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM tenants WHERE id = $1", tenant_id)
            await self._event(conn, "tenant.deleted", tenant_id, request_id,
                              {"tenant_id": tenant_id, "name": row["name"], "parent_id": row["parent_id"]})

