"""SQL of identities, tenants, policies, bindings and revocations (the gateway's schema).

Every query names its tenant; changes that others must learn of (policies,
bindings, revocations) write their event to the outbox in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from shared.contracts.events import Event
from shared.crypto import Sealed
from shared.db import outbox
from shared.errors import (
    BindingConflict,
    BindingNotFound,
    Forbidden,
    IdentityNotFound,
    NameConflict,
    PolicyInUse,
    PolicyNotFound,
    TenantNotFound,
)

_IDENTITY = ("id, tenant_id, name, kind, allowed_scopes, partner_admin, client_id, mfa_kek_id, token_generation,"
             " created_at, updated_at")
_SUBTREE = ("WITH RECURSIVE sub AS (SELECT id FROM tenants WHERE id = $1"
            " UNION SELECT t.id FROM tenants t JOIN sub ON t.parent_id = sub.id)")


class IamRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def _event(self, conn: asyncpg.Connection, kind: str, tenant_id: str | None, request_id: str,
                     data: dict[str, Any]) -> None:
        await outbox.add(conn, Event(type=kind, tenant_id=tenant_id, request_id=request_id, data=data),
                         schema=self.schema)

    # -- tenants -----------------------------------------------------------------

    async def tenant(self, tenant_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)

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
                "INSERT INTO tenants (id, name, kind, parent_id, quotas) VALUES ($1, $2, $3, $4, $5) RETURNING *",
                row["id"], row["name"], row["kind"], row["parent_id"], row["quotas"])
        except asyncpg.UniqueViolationError:
            raise NameConflict("a tenant with this name exists", details={"name": row["name"]}) from None

    async def list_tenants(self, root_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"{_SUBTREE} SELECT t.* FROM tenants t JOIN sub ON sub.id = t.id"
            " WHERE ($2::text IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3", root_id, after, limit)

    async def update_tenant(self, tenant_id: str, fields: dict[str, Any],
                            quota_patch: dict[str, Any] | None) -> asyncpg.Record:
        """Set ``fields`` (name, kind); merge ``quota_patch`` into the quotas (RFC 7396: a null removes a key,
        ``{}`` from ``"quotas": null`` removes them all)."""
        quotas = "quotas" if quota_patch is None else (
            "'{}'::jsonb" if not quota_patch else "jsonb_strip_nulls(quotas || $4::jsonb)")
        try:
            row = await self.pool.fetchrow(
                f"UPDATE tenants SET name = coalesce($2, name), kind = coalesce($3, kind), quotas = {quotas},"
                " updated_at = now() WHERE id = $1 RETURNING *",
                tenant_id, fields.get("name"), fields.get("kind"), *([quota_patch] if quota_patch else []))
        except asyncpg.UniqueViolationError:
            raise NameConflict("a tenant with this name exists", details={"name": fields.get("name")}) from None
        if row is None:
            raise TenantNotFound(details={"tenant_id": tenant_id})
        return row

    async def delete_tenant(self, tenant_id: str, request_id: str) -> None:
        """Delete the tenant and its policies; ``tenant.deleted`` tells every service to destroy its data."""
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
            await conn.execute("DELETE FROM bindings WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM policies WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM revoked_tokens WHERE tenant_id = $1", tenant_id)
            await conn.execute("DELETE FROM tenants WHERE id = $1", tenant_id)
            await self._event(conn, "tenant.deleted", tenant_id, request_id,
                              {"tenant_id": tenant_id, "name": row["name"], "parent_id": row["parent_id"]})

    # -- identities --------------------------------------------------------------

    async def create_identity(self, row: dict[str, Any]) -> asyncpg.Record:
        try:
            return await self.pool.fetchrow(
                "INSERT INTO identities (id, tenant_id, name, kind, allowed_scopes, partner_admin, client_id,"
                f" secret_hash, password_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_IDENTITY}",
                row["id"], row["tenant_id"], row["name"], row["kind"], row["allowed_scopes"], row["partner_admin"],
                row.get("client_id"), row.get("secret_hash"), row.get("password_hash"))
        except asyncpg.UniqueViolationError:
            raise NameConflict("an identity with this name exists", details={"name": row["name"]}) from None

    async def identity(self, tenant_id: str, identity_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(f"SELECT {_IDENTITY} FROM identities WHERE id = $1 AND tenant_id = $2",
                                       identity_id, tenant_id)
        if row is None:
            raise IdentityNotFound(details={"identity_id": identity_id})
        return row

    async def identity_any_tenant(self, identity_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(f"SELECT {_IDENTITY} FROM identities WHERE id = $1", identity_id)

    async def list_identities(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"SELECT {_IDENTITY} FROM identities WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2)"
            " ORDER BY id LIMIT $3", tenant_id, after, limit)

    async def update_identity(self, tenant_id: str, identity_id: str, changes: dict[str, Any], *,
                              void_tokens: bool = False, request_id: str = "") -> asyncpg.Record:
        """Apply ``changes``; with ``void_tokens`` every token the identity holds is void (same transaction)."""
        allowed = {"allowed_scopes", "partner_admin", "password_hash", "secret_hash"}
        fields = {k: v for k, v in changes.items() if k in allowed and v is not None}
        sets = "".join(f"{k} = ${i + 3}, " for i, k in enumerate(fields))
        if void_tokens:
            sets += "token_generation = token_generation + 1, "
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE identities SET {sets}updated_at = now() WHERE id = $1 AND tenant_id = $2"
                f" RETURNING {_IDENTITY}", identity_id, tenant_id, *fields.values())
            if row is None:
                raise IdentityNotFound(details={"identity_id": identity_id})
            if void_tokens:
                await self._tokens_voided(conn, row, request_id)
            return row

    async def _tokens_voided(self, conn: asyncpg.Connection, row: asyncpg.Record, request_id: str) -> None:
        """Tell every replica that tokens of this identity older than its generation are void."""
        await self._event(conn, "token.revoked", row["tenant_id"], request_id,
                          {"identity_id": row["id"], "generation": row["token_generation"]})

    async def delete_identity(self, tenant_id: str, identity_id: str, request_id: str) -> None:
        """Delete it, its bindings, and void every token it holds."""
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT id FROM identities WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                                   identity_id, tenant_id) is None:
                raise IdentityNotFound(details={"identity_id": identity_id})
            await conn.execute("DELETE FROM bindings WHERE identity_id = $1", identity_id)
            await conn.execute("DELETE FROM identities WHERE id = $1", identity_id)
            await conn.execute("INSERT INTO revoked_identities (identity_id) VALUES ($1) ON CONFLICT DO NOTHING",
                               identity_id)
            await self._event(conn, "token.revoked", tenant_id, request_id, {"identity_id": identity_id})

    async def user_by_name(self, tenant_id: str | None, username: str) -> asyncpg.Record | None:
        """The user called ``username`` in ``tenant_id`` (``None``: the root tenant)."""
        return await self.pool.fetchrow(
            "SELECT id, tenant_id, allowed_scopes, password_hash, token_generation FROM identities"
            " WHERE kind = 'user' AND name = $2"
            " AND tenant_id = coalesce($1, (SELECT id FROM tenants WHERE parent_id IS NULL))", tenant_id, username)

    # -- failed logins (the account lockout; see login.py) ---------------------------

    async def login_locked(self, key: str) -> bool:
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM login_failures WHERE key = $1 AND locked_until > now())", key))

    async def clear_login_failures(self, key: str) -> None:
        await self.pool.execute("DELETE FROM login_failures WHERE key = $1", key)

    async def record_login_failure(self, key: str, lock_after: int, window: float, lock_for: float) -> None:
        """Count a failure; the ``lock_after``-th within ``window`` seconds locks ``key`` for ``lock_for``.

        A failure during the lock counts but does not extend it: anyone who
        knows a user's name could otherwise keep the account locked for ever.
        """
        await self.pool.execute(
            "INSERT INTO login_failures AS f (key, failures, window_start) VALUES ($1, 1, now())"
            " ON CONFLICT (key) DO UPDATE SET"
            " failures = CASE WHEN f.window_start < now() - make_interval(secs => $3) THEN 1"
            "                 ELSE f.failures + 1 END,"
            " window_start = CASE WHEN f.window_start < now() - make_interval(secs => $3) THEN now()"
            "                     ELSE f.window_start END,"
            " locked_until = CASE WHEN f.locked_until > now() THEN f.locked_until"
            "                     WHEN f.window_start >= now() - make_interval(secs => $3) AND f.failures + 1 >= $2"
            "                     THEN now() + make_interval(secs => $4) ELSE NULL END",
            key, lock_after, window, lock_for)

    async def forget_old_login_failures(self) -> None:
        await self.pool.execute("DELETE FROM login_failures WHERE window_start < now() - interval '1 day'"
                                " AND (locked_until IS NULL OR locked_until < now())")

    async def set_totp(self, tenant_id: str, identity_id: str, sealed: Sealed, *, void_tokens: bool,
                       request_id: str) -> None:
        """Enrol (or replace) the identity's TOTP secret; ``void_tokens`` when it replaces another's enrolment."""
        bump = ", token_generation = token_generation + 1" if void_tokens else ""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE identities SET mfa_kek_id = $3, mfa_wrapped_key = $4, mfa_nonce = $5, mfa_ciphertext = $6,"
                f" mfa_last_step = 0, updated_at = now(){bump} WHERE id = $1 AND tenant_id = $2"
                " RETURNING id, tenant_id, token_generation",
                identity_id, tenant_id, sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)
            if row is None:
                raise IdentityNotFound(details={"identity_id": identity_id})
            if void_tokens:
                await self._tokens_voided(conn, row, request_id)

    async def reset_totp(self, tenant_id: str, identity_id: str, request_id: str) -> bool:
        """Remove the identity's TOTP enrolment and void its tokens; ``False`` if it had none."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE identities SET mfa_kek_id = NULL, mfa_wrapped_key = NULL, mfa_nonce = NULL,"
                " mfa_ciphertext = NULL, mfa_last_step = 0, token_generation = token_generation + 1,"
                " updated_at = now() WHERE id = $1 AND tenant_id = $2 AND mfa_kek_id IS NOT NULL"
                " RETURNING id, tenant_id, token_generation", identity_id, tenant_id)
            if row is None:
                await self.identity(tenant_id, identity_id)  # identity_not_found, or simply not enrolled
                return False
            await self._tokens_voided(conn, row, request_id)
            return True

    async def totp(self, identity_id: str) -> Sealed | None:
        row = await self.pool.fetchrow(
            "SELECT mfa_kek_id, mfa_wrapped_key, mfa_nonce, mfa_ciphertext FROM identities WHERE id = $1",
            identity_id)
        if row is None or row["mfa_kek_id"] is None:
            return None
        return Sealed(*row)

    async def claim_totp_step(self, identity_id: str, step: int) -> bool:
        """Record ``step`` as used; ``False`` if it (or a later one) was used already (replay)."""
        status = await self.pool.execute(
            "UPDATE identities SET mfa_last_step = $2 WHERE id = $1 AND mfa_last_step < $2", identity_id, step)
        return bool(status.endswith(" 1"))

    # -- policies and bindings ---------------------------------------------------

    async def create_policy(self, tenant_id: str, row: dict[str, Any], request_id: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                created = await conn.fetchrow(
                    "INSERT INTO policies (id, tenant_id, name, description, rules) VALUES ($1, $2, $3, $4, $5)"
                    " RETURNING *", row["id"], tenant_id, row["name"], row["description"], row["rules"])
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
                             request_id: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE policies SET description = $3, rules = $4, updated_at = now()"
                " WHERE tenant_id = $1 AND name = $2 RETURNING *", tenant_id, name, description, rules)
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
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM bindings WHERE policy_id = $1)", row["id"]):
                raise PolicyInUse("the policy is bound to identities", details={"name": name})
            await conn.execute("DELETE FROM policies WHERE id = $1", row["id"])
            await self._event(conn, "policy.deleted", tenant_id, request_id, {"id": row["id"], "name": name})

    async def rules_for(self, identity_id: str) -> list[Any]:
        """The rules of every policy bound to ``identity_id``."""
        rows = await self.pool.fetch(
            "SELECT p.rules FROM bindings b JOIN policies p ON p.id = b.policy_id WHERE b.identity_id = $1",
            identity_id)
        return [rule for r in rows for rule in r["rules"]]

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
                    " RETURNING id, identity_id, created_at, $5::text AS policy",
                    binding_id, tenant_id, policy_id, identity_id, policy)
            except asyncpg.UniqueViolationError:
                raise BindingConflict("the identity is already bound to this policy",
                                      details={"policy": policy, "identity_id": identity_id}) from None
            # who a policy applies to changed: replicas drop their cached decisions
            await self._event(conn, "policy.updated", tenant_id, request_id,
                              {"id": policy_id, "name": policy, "binding_id": binding_id})
            return row

    _BINDING = ("SELECT b.id, b.identity_id, b.created_at, p.name AS policy FROM bindings b"
                " JOIN policies p ON p.id = b.policy_id")

    async def binding(self, tenant_id: str, binding_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(f"{self._BINDING} WHERE b.tenant_id = $1 AND b.id = $2", tenant_id, binding_id)
        if row is None:
            raise BindingNotFound(details={"binding_id": binding_id})
        return row

    async def list_bindings(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"{self._BINDING} WHERE b.tenant_id = $1 AND ($2::text IS NULL OR b.id > $2) ORDER BY b.id LIMIT $3",
            tenant_id, after, limit)

    async def delete_binding(self, tenant_id: str, binding_id: str, request_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "DELETE FROM bindings b USING policies p WHERE b.tenant_id = $1 AND b.id = $2 AND p.id = b.policy_id"
                " RETURNING p.id, p.name", tenant_id, binding_id)
            if row is None:
                raise BindingNotFound(details={"binding_id": binding_id})
            await self._event(conn, "policy.updated", tenant_id, request_id,
                              {"id": row["id"], "name": row["name"], "binding_id": binding_id})

    # -- revocations -------------------------------------------------------------

    async def revoke_token(self, tenant_id: str, jti: str, expires_at: datetime, request_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO revoked_tokens (jti, tenant_id, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant_id, jti) DO NOTHING", jti, tenant_id, expires_at)
            await self._event(conn, "token.revoked", tenant_id, request_id,
                              {"jti": jti, "tenant_id": tenant_id, "expires_at": expires_at.isoformat()})

    async def revocations(self) -> tuple[set[tuple[str, str]], set[str], dict[str, int]]:
        """Unexpired revoked tokens (tenant, jti), identities whose tokens are all void (deleted), and each
        identity's current token generation where it was ever raised (older tokens are void)."""
        jtis = await self.pool.fetch("SELECT tenant_id, jti FROM revoked_tokens WHERE expires_at > now()")
        idents = await self.pool.fetch("SELECT identity_id FROM revoked_identities")
        floors = await self.pool.fetch("SELECT id, token_generation FROM identities WHERE token_generation > 0")
        return ({(r["tenant_id"], r["jti"]) for r in jtis}, {r["identity_id"] for r in idents},
                {r["id"]: r["token_generation"] for r in floors})
