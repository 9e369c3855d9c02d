"""SQL of identities: credentials, TOTP, failed logins, and the revocations of their tokens.

Every query names its tenant; voiding tokens writes ``token.revoked`` to the
outbox in the same transaction as the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from services.gateway.iam.store import SchemaRepository
from shared.contracts.times import rfc3339
from shared.crypto import Sealed
from shared.errors import Forbidden, IdentityNotFound, NameConflict

_IDENTITY = ("id, tenant_id, name, kind, allowed_scopes, partner_admin, client_id, mfa_kek_id, token_generation,"
             " require_mfa, external_method, external_subject, created_at, updated_at")


class IamRepository(SchemaRepository):
    """Identities and their tokens' validity."""

    async def identity_by_client_id(self, client_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT id, tenant_id, allowed_scopes, secret_hash, token_generation FROM identities WHERE client_id = $1",
            client_id)

    async def whoami(self, identity_id: str, tenant_id: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow(
            "SELECT i.id, i.name, i.kind, i.partner_admin, i.allowed_scopes, i.mfa_kek_id IS NOT NULL AS mfa_enrolled,"
            " t.id AS tenant_id, t.name AS tenant_name, t.kind AS tenant_kind"
            " FROM identities i JOIN tenants t ON t.id = i.tenant_id WHERE i.id = $1 AND i.tenant_id = $2",
            identity_id, tenant_id)

    async def create_identity(self, row: dict[str, Any]) -> asyncpg.Record:
        try:
            return await self.pool.fetchrow(
                "INSERT INTO identities (id, tenant_id, name, kind, allowed_scopes, partner_admin, client_id,"
                " secret_hash, password_hash, require_mfa) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                f" RETURNING {_IDENTITY}",
                row["id"], row["tenant_id"], row["name"], row["kind"], row["allowed_scopes"], row["partner_admin"],
                row.get("client_id"), row.get("secret_hash"), row.get("password_hash"), bool(row.get("require_mfa")))
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
        allowed = {"allowed_scopes", "partner_admin", "password_hash", "secret_hash", "require_mfa"}
        fields = {k: v for k, v in changes.items() if k in allowed and v is not None}
        sets = "".join(f"{k} = ${i + 3}, " for i, k in enumerate(fields))
        if void_tokens:
            sets += "token_generation = token_generation + 1, "
        async with self.pool.acquire() as conn, conn.transaction():
            await self._admins_lock(conn, tenant_id)
            row = await conn.fetchrow(
                f"UPDATE identities SET {sets}updated_at = now() WHERE id = $1 AND tenant_id = $2"
                f" RETURNING {_IDENTITY}", identity_id, tenant_id, *fields.values())
            if row is None:
                raise IdentityNotFound(details={"identity_id": identity_id})
            await self._an_admin_remains(conn, tenant_id)
            if void_tokens:
                await self._tokens_voided(conn, row, request_id)
            return row

    @staticmethod
    async def _admins_lock(conn: asyncpg.Connection, tenant_id: str) -> None:
        """Changes to one tenant's identities queue here, so two admins removing each other at once can't
        both pass the check below."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tenant-admins:' || $1))", tenant_id)

    @staticmethod
    async def _an_admin_remains(conn: asyncpg.Connection, tenant_id: str) -> None:
        """After a change, in its transaction: the root tenant keeps an identity with the ``admin`` scope,
        and a partner tenant a partner admin; else ``forbidden`` and nothing changes (no lock-out)."""
        row = await conn.fetchrow(
            "SELECT t.parent_id IS NULL AS root, t.kind,"
            " (SELECT count(*) FROM identities i WHERE i.tenant_id = t.id AND 'admin' = ANY(i.allowed_scopes))"
            " AS admins,"
            " (SELECT count(*) FROM identities i WHERE i.tenant_id = t.id AND i.partner_admin) AS partner_admins"
            " FROM tenants t WHERE t.id = $1", tenant_id)
        if row is None:
            return
        if row["root"] and not row["admins"]:
            raise Forbidden("the root tenant would be left without an identity holding the 'admin' scope: make "
                            "another admin first", details={"rule": "last_root_admin"})
        if row["kind"] == "partner" and not row["partner_admins"]:
            raise Forbidden("the partner tenant would be left without a partner admin: make another first",
                            details={"rule": "last_partner_admin"})

    async def _tokens_voided(self, conn: asyncpg.Connection, row: asyncpg.Record, request_id: str) -> None:
        """Tell every replica that tokens of this identity older than its generation are void."""
        await self._event(conn, "token.revoked", row["tenant_id"], request_id,
                          {"identity_id": row["id"], "generation": row["token_generation"]})

    async def delete_identity(self, tenant_id: str, identity_id: str, request_id: str) -> None:
        """Delete it, its bindings (grants too: its open access requests end as ``cancelled``), and void every
        token it holds."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._admins_lock(conn, tenant_id)
            if await conn.fetchval("SELECT id FROM identities WHERE id = $1 AND tenant_id = $2 FOR UPDATE",
                                   identity_id, tenant_id) is None:
                raise IdentityNotFound(details={"identity_id": identity_id})
            await conn.execute("DELETE FROM bindings WHERE identity_id = $1", identity_id)
            await conn.execute("UPDATE access_requests SET status = 'cancelled', decided_at = now(), updated_at = now()"
                               " WHERE requester_id = $1 AND status IN ('pending', 'approved')", identity_id)
            await conn.execute("DELETE FROM identities WHERE id = $1", identity_id)
            await self._an_admin_remains(conn, tenant_id)
            await conn.execute("INSERT INTO revoked_identities (identity_id) VALUES ($1) ON CONFLICT DO NOTHING",
                               identity_id)
            await self._event(conn, "token.revoked", tenant_id, request_id, {"identity_id": identity_id})

    async def user_by_name(self, tenant_id: str | None, username: str) -> asyncpg.Record | None:
        """The user called ``username`` in ``tenant_id`` (``None``: the root tenant); ``mfa_at_login``: it has
        a TOTP enrolment and it or its tenant requires MFA, so a password alone is not enough."""
        return await self.pool.fetchrow(
            "SELECT i.id, i.tenant_id, i.allowed_scopes, i.password_hash, i.token_generation,"
            " i.mfa_kek_id IS NOT NULL AND (i.require_mfa OR t.require_mfa) AS mfa_at_login"
            " FROM identities i JOIN tenants t ON t.id = i.tenant_id"
            " WHERE i.kind = 'user' AND i.name = $2"
            " AND i.tenant_id = coalesce($1, (SELECT id FROM tenants WHERE parent_id IS NULL))", tenant_id, username)

    async def login_rules(self, identity_id: str) -> asyncpg.Record | None:
        """What a token renewal re-checks of the login it continues: ``mfa_at_login`` (a password alone would
        not do now) and ``method_live`` (an external identity's auth method still exists)."""
        return await self.pool.fetchrow(
            "SELECT i.mfa_kek_id IS NOT NULL AND (i.require_mfa OR t.require_mfa) AS mfa_at_login,"
            " i.external_method IS NULL OR EXISTS (SELECT 1 FROM auth_methods m WHERE m.tenant_id = i.tenant_id"
            " AND m.name = i.external_method) AS method_live"
            " FROM identities i JOIN tenants t ON t.id = i.tenant_id WHERE i.id = $1", identity_id)

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
                       request_id: str) -> int:
        """Enrol (or replace) the identity's TOTP secret; ``void_tokens`` when it replaces another's enrolment.

        Returns the identity's token generation afterwards.
        """
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
            return int(row["token_generation"])

    async def reset_totp(self, tenant_id: str, identity_id: str, request_id: str) -> int | None:
        """Remove the identity's TOTP enrolment and void its tokens: the new generation (``None``: none enrolled)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE identities SET mfa_kek_id = NULL, mfa_wrapped_key = NULL, mfa_nonce = NULL,"
                " mfa_ciphertext = NULL, mfa_last_step = 0, token_generation = token_generation + 1,"
                " updated_at = now() WHERE id = $1 AND tenant_id = $2 AND mfa_kek_id IS NOT NULL"
                " RETURNING id, tenant_id, token_generation", identity_id, tenant_id)
            if row is None:
                await self.identity(tenant_id, identity_id)  # identity_not_found, or simply not enrolled
                return None
            await self._tokens_voided(conn, row, request_id)
            return int(row["token_generation"])

    async def totp(self, identity_id: str) -> tuple[str, Sealed] | None:
        """The identity's tenant and its sealed TOTP seed (sealed under that tenant's KEK)."""
        row = await self.pool.fetchrow(
            "SELECT tenant_id, mfa_kek_id, mfa_wrapped_key, mfa_nonce, mfa_ciphertext FROM identities WHERE id = $1",
            identity_id)
        if row is None or row["mfa_kek_id"] is None:
            return None
        return row["tenant_id"], Sealed(*tuple(row)[1:])

    async def claim_totp_step(self, identity_id: str, step: int) -> bool:
        """Record ``step`` as used; ``False`` if it (or a later one) was used already (replay)."""
        status = await self.pool.execute(
            "UPDATE identities SET mfa_last_step = $2 WHERE id = $1 AND mfa_last_step < $2", identity_id, step)
        return bool(status.endswith(" 1"))

    async def revoke_token(self, tenant_id: str, jti: str, expires_at: datetime, request_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO revoked_tokens (jti, tenant_id, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (tenant_id, jti) DO NOTHING", jti, tenant_id, expires_at)
            await self._event(conn, "token.revoked", tenant_id, request_id,
                              {"jti": jti, "tenant_id": tenant_id, "expires_at": rfc3339(expires_at)})

    async def revocations(self) -> tuple[set[tuple[str, str]], set[str], dict[str, int]]:
        """Unexpired revoked tokens (tenant, jti), identities whose tokens are all void (deleted), and each
        identity's current token generation where it was ever raised (older tokens are void)."""
        jtis = await self.pool.fetch("SELECT tenant_id, jti FROM revoked_tokens WHERE expires_at > now()")
        idents = await self.pool.fetch("SELECT identity_id FROM revoked_identities")
        floors = await self.pool.fetch("SELECT id, token_generation FROM identities WHERE token_generation > 0")
        return ({(r["tenant_id"], r["jti"]) for r in jtis}, {r["identity_id"] for r in idents},
                {r["id"]: r["token_generation"] for r in floors})

