"""SQL of auth methods (api.md §10): a tenant's methods and roles, and the external identities they log in.

An external identity is one per (tenant, method, user claim value), made at its first login; it has no
password and no client secret. Its bindings are the role's policies, replaced at every login in the same
transaction (changing a role changes the next login's token); ``policy.updated`` tells every replica, as
any change of bindings does.
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg

from services.gateway.iam import domain
from services.gateway.iam.repository import _IDENTITY
from services.gateway.iam.store import SchemaRepository
from shared.crypto import Sealed
from shared.errors import NameConflict, RoleNotFound, ServiceUnavailable

#: the auth method a name doesn't name (a 404 of the vocabulary: a method is a kind of role holder)
_NO_METHOD = "auth method not found"
#: the longest a device sign-in's polling interval grows (seconds)
MAX_DEVICE_INTERVAL = 60


def external_name(method: str, subject: str) -> str:
    """An external identity's name: readable, within the identities' name rules, unique per (method, subject)."""
    digest = hashlib.sha256(f"{method}\0{subject}".encode()).hexdigest()[:12]
    return f"{method[:40]}-{digest}"



def _settled(tenant: str, policies: str, scopes: str) -> str:
    """SQL: is the external identity ``i`` settled as a role makes it — its allowed scopes exactly
    ``scopes``, its standing bindings exactly the policies named ``policies`` that exist in ``tenant``
    (compared as sorted sets)? Grants (bindings of an access request, api.md §14) are not the role's: a
    login neither counts nor removes them. The arguments are the query's placeholders."""
    return (f"(i.allowed_scopes = {scopes}::text[]"
            " AND ARRAY(SELECT DISTINCT b.policy_id FROM bindings b WHERE b.identity_id = i.id"
            " AND b.request_id IS NULL ORDER BY 1)"
            f" = ARRAY(SELECT DISTINCT p.id FROM policies p WHERE p.tenant_id = {tenant}"
            f" AND p.name = ANY({policies}::text[]) ORDER BY 1))")


class MethodsRepository(SchemaRepository):
    # -- methods -------------------------------------------------------------------------------------

    async def create_method(self, tenant_id: str, name: str, kind: str, config: dict[str, Any],
                            secret: Sealed | None = None) -> asyncpg.Record:
        s = secret
        try:
            return await self.pool.fetchrow(
                "INSERT INTO auth_methods (tenant_id, name, type, config, secret_kek_id, secret_wrapped_key,"
                " secret_nonce, secret_ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                tenant_id, name, kind, config, s and s.kek_id, s and s.wrapped_key, s and s.nonce, s and s.ciphertext)
        except asyncpg.UniqueViolationError:
            raise NameConflict("an auth method with this name exists", details={"name": name}) from None

    async def method(self, tenant_id: str, name: str) -> asyncpg.Record | None:
        return await self.pool.fetchrow("SELECT * FROM auth_methods WHERE tenant_id = $1 AND name = $2",
                                        tenant_id, name)

    async def method_with_role(self, tenant_id: str, name: str, role: str) -> asyncpg.Record | None:
        """The method and one of its roles in one round trip (a login's path): ``role_body`` is null when the
        method has no such role."""
        return await self.pool.fetchrow(
            "SELECT m.*, r.body AS role_body, r.updated_at AS role_updated_at FROM auth_methods m"
            " LEFT JOIN auth_roles r ON r.tenant_id = m.tenant_id AND r.method = m.name AND r.name = $3"
            " WHERE m.tenant_id = $1 AND m.name = $2", tenant_id, name, role)

    async def list_methods(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM auth_methods WHERE tenant_id = $1 AND ($2::text IS NULL OR name > $2)"
            " ORDER BY name LIMIT $3", tenant_id, after, limit)

    async def update_method(self, tenant_id: str, name: str, config: dict[str, Any],
                            secret: Sealed | None = None) -> asyncpg.Record | None:
        """The new config (and client secret, when given; else the sealed one stays)."""
        s = secret
        return await self.pool.fetchrow(
            "UPDATE auth_methods SET config = $3, updated_at = now(), secret_kek_id = coalesce($4, secret_kek_id),"
            " secret_wrapped_key = coalesce($5, secret_wrapped_key), secret_nonce = coalesce($6, secret_nonce),"
            " secret_ciphertext = coalesce($7, secret_ciphertext) WHERE tenant_id = $1 AND name = $2 RETURNING *",
            tenant_id, name, config, s and s.kek_id, s and s.wrapped_key, s and s.nonce, s and s.ciphertext)

    # -- pending sign-ins (oidc) ---------------------------------------------------------------------

    async def add_pending(self, state_hash: bytes, tenant_id: str, method: str, role: str, redirect_uri: str,
                          nonce: str, code_challenge: str, ttl: int) -> bool:
        """A sign-in waiting for its callback; ``False`` when the state is already pending. Expired ones go."""
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM auth_pending WHERE expires_at < now()")
            status = await conn.execute(
                "INSERT INTO auth_pending (state_hash, tenant_id, method, role, redirect_uri, nonce, code_challenge,"
                " expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))"
                " ON CONFLICT (state_hash) DO NOTHING", state_hash, tenant_id, method, role, redirect_uri, nonce,
                code_challenge, float(ttl))
            return not status.endswith(" 0")

    async def take_pending(self, state_hash: bytes, tenant_id: str, method: str) -> asyncpg.Record | None:
        """The pending sign-in of this state, method and tenant, removed (once only); ``None`` if there is
        none or it has expired."""
        return await self.pool.fetchrow(
            "DELETE FROM auth_pending WHERE state_hash = $1 AND tenant_id = $2 AND method = $3"
            " RETURNING *, expires_at > now() AS live", state_hash, tenant_id, method)

    # -- pending device sign-ins (oidc, RFC 8628) -----------------------------------------------------

    async def add_device(self, handle_hash: bytes, tenant_id: str, method: str, role: str, nonce: str,
                         device_code: bytes, interval: int, ttl: int, most: int) -> bool:
        """A device sign-in waiting for its polls, due at once; ``False`` when the method already has ``most``
        pending (a bound on what anonymous callers can make the table hold). Expired ones go first."""
        async with self.pool.acquire() as conn:
            await conn.execute("DELETE FROM auth_device WHERE expires_at < now()")
            status = await conn.execute(
                "INSERT INTO auth_device (handle_hash, tenant_id, method, role, nonce, device_code, interval_s,"
                " next_poll_at, expires_at) SELECT $1, $2, $3, $4, $5, $6, $7, now(), now() + make_interval(secs => $8)"
                " WHERE (SELECT count(*) FROM auth_device WHERE tenant_id = $2 AND method = $3) < $9",
                handle_hash, tenant_id, method, role, nonce, device_code, interval, float(ttl), most)
            return not status.endswith(" 0")

    async def claim_device_poll(self, handle_hash: bytes, tenant_id: str, method: str) -> asyncpg.Record | None:
        """The live device sign-in of this handle, method and tenant (``None`` if there is none, or it has
        expired), its next poll set one interval ahead. ``due`` says whether this poll may reach the provider;
        one that came early (before ``next_poll_at``) makes the interval 5 s longer, as RFC 8628 §3.5 has a
        provider do on ``slow_down``. One row lock: of polls racing on a handle, one reaches the provider."""
        return await self.pool.fetchrow(
            "WITH old AS (SELECT handle_hash, next_poll_at <= now() AS due FROM auth_device WHERE handle_hash = $1"
            "  AND tenant_id = $2 AND method = $3 AND expires_at > now() FOR UPDATE),"
            " new AS (SELECT old.handle_hash, old.due, CASE WHEN old.due THEN d.interval_s"
            "  ELSE least(d.interval_s + 5, $4) END AS interval_s FROM old JOIN auth_device d USING (handle_hash))"
            " UPDATE auth_device d SET interval_s = new.interval_s,"
            " next_poll_at = now() + make_interval(secs => new.interval_s)"
            " FROM new WHERE d.handle_hash = new.handle_hash RETURNING d.*, new.due",
            handle_hash, tenant_id, method, MAX_DEVICE_INTERVAL)

    async def slow_device(self, handle_hash: bytes) -> int | None:
        """The provider said ``slow_down``: the interval 5 s longer from now on (RFC 8628 §3.5); the new one."""
        interval = await self.pool.fetchval(
            "UPDATE auth_device SET interval_s = least(interval_s + 5, $2),"
            " next_poll_at = now() + make_interval(secs => least(interval_s + 5, $2))"
            " WHERE handle_hash = $1 RETURNING interval_s", handle_hash, MAX_DEVICE_INTERVAL)
        return None if interval is None else int(interval)

    async def end_device(self, handle_hash: bytes) -> bool:
        """The device sign-in is over (a token, a refusal): its row goes; ``False`` if it had already gone."""
        status = await self.pool.execute("DELETE FROM auth_device WHERE handle_hash = $1", handle_hash)
        return not status.endswith(" 0")

    async def delete_method(self, tenant_id: str, name: str) -> bool:
        """The method and its roles (its external identities stay, listed and deletable, until deleted)."""
        status = await self.pool.execute("DELETE FROM auth_methods WHERE tenant_id = $1 AND name = $2",
                                         tenant_id, name)
        return not status.endswith(" 0")

    # -- roles ---------------------------------------------------------------------------------------

    async def put_role(self, tenant_id: str, method: str, name: str, body: dict[str, Any]) -> asyncpg.Record:
        try:
            return await self.pool.fetchrow(
                "INSERT INTO auth_roles (tenant_id, method, name, body) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (tenant_id, method, name) DO UPDATE SET body = $4, updated_at = now() RETURNING *",
                tenant_id, method, name, body)
        except asyncpg.ForeignKeyViolationError:  # the method went meanwhile
            raise ServiceUnavailable("the auth method changed meanwhile: try again") from None

    async def role(self, tenant_id: str, method: str, name: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "SELECT * FROM auth_roles WHERE tenant_id = $1 AND method = $2 AND name = $3", tenant_id, method, name)
        if row is None:
            raise RoleNotFound(f"role '{name[:64]}' not found", details={"role": name[:64]})
        return row

    async def list_roles(self, tenant_id: str, method: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM auth_roles WHERE tenant_id = $1 AND method = $2 AND ($3::text IS NULL OR name > $3)"
            " ORDER BY name LIMIT $4", tenant_id, method, after, limit)

    async def delete_role(self, tenant_id: str, method: str, name: str) -> None:
        status = await self.pool.execute(
            "DELETE FROM auth_roles WHERE tenant_id = $1 AND method = $2 AND name = $3", tenant_id, method, name)
        if status.endswith(" 0"):
            raise RoleNotFound(f"role '{name[:64]}' not found", details={"role": name[:64]})

    # -- logins --------------------------------------------------------------------------------------

    async def login_state(self, tenant_id: str, method: str, role: str, subject: str, scopes: list[str],
                          policies: list[str], versions: tuple[Any, Any]) -> asyncpg.Record | None:
        """In one round trip, what a login with keys and role already in memory needs: whether the method (a
        ``jwt`` one) and the role are still the ``versions`` held (``current``), and the external identity with
        whether it is already settled as the role makes it (``settled``, see ``external_login``).

        Only booleans and the two values a token needs come back: a login is the hottest path a workload
        takes, and every column decoded is paid on each one (measured, bench/logins.py)."""
        return await self.pool.fetchrow(
            "SELECT m.type = 'jwt' AND m.updated_at = $7 AND r.updated_at IS NOT DISTINCT FROM $8 AS current,"
            f" i.id, i.token_generation, {_settled('$1', '$5', '$6')} AS settled"
            " FROM auth_methods m"
            " LEFT JOIN auth_roles r ON r.tenant_id = m.tenant_id AND r.method = m.name AND r.name = $3"
            " LEFT JOIN identities i ON i.tenant_id = m.tenant_id AND i.kind = 'external'"
            "  AND i.external_method = m.name AND i.external_subject = $4"
            " WHERE m.tenant_id = $1 AND m.name = $2", tenant_id, method, role, subject, policies, scopes, *versions)

    async def external_login(self, tenant_id: str, method: str, subject: str, scopes: list[str],
                             policies: list[str], request_id: str,
                             known: asyncpg.Record | None = None) -> tuple[Any, bool]:
        """The external identity of (method, subject), made if new, bound to exactly ``policies`` (those that
        exist in the tenant), its allowed scopes the role's; whether anything changed.

        A returning identity whose scopes and bindings are already the role's (``settled``) costs one read and
        no write (most logins: a workload logs in again and again); any difference is settled in one
        transaction. ``known`` is ``login_state``'s row when the caller has it."""
        if known is None or known["id"] is None:
            known = await self.pool.fetchrow(
                f"SELECT i.id, i.token_generation, {_settled('$1', '$4', '$5')} AS settled FROM identities i"
                " WHERE tenant_id = $1 AND kind = 'external' AND external_method = $2 AND external_subject = $3",
                tenant_id, method, subject, policies, scopes)
        if known is not None and known["settled"]:
            return known, False
        return await self._settle_external(tenant_id, method, subject, scopes, policies, request_id), True

    async def _settle_external(self, tenant_id: str, method: str, subject: str, scopes: list[str],
                               policies: list[str], request_id: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('external:' || $1 || ':' || $2 || ':' || $3))",
                               tenant_id, method, subject)
            row = await conn.fetchrow(
                f"UPDATE identities SET allowed_scopes = $4, updated_at = now() WHERE tenant_id = $1 AND"
                f" kind = 'external' AND external_method = $2 AND external_subject = $3 RETURNING {_IDENTITY}",
                tenant_id, method, subject, scopes)
            if row is None:
                row = await conn.fetchrow(
                    "INSERT INTO identities (id, tenant_id, name, kind, allowed_scopes, external_method,"
                    f" external_subject) VALUES ($1, $2, $3, 'external', $4, $5, $6) RETURNING {_IDENTITY}",
                    domain.new_id("idn"), tenant_id, external_name(method, subject), scopes, method, subject)
            wanted = await conn.fetch("SELECT id, name FROM policies WHERE tenant_id = $1 AND name = ANY($2::text[])",
                                      tenant_id, policies)
            bound = {r["policy_id"] for r in await conn.fetch(
                "SELECT policy_id FROM bindings WHERE identity_id = $1 AND request_id IS NULL", row["id"])}
            if bound != {r["id"] for r in wanted}:
                await conn.execute("DELETE FROM bindings WHERE identity_id = $1 AND request_id IS NULL", row["id"])
                for policy in wanted:
                    await conn.execute("INSERT INTO bindings (id, tenant_id, policy_id, identity_id)"
                                       " VALUES ($1, $2, $3, $4)", domain.new_id("bnd"), tenant_id, policy["id"],
                                       row["id"])
                for policy_id in bound | {r["id"] for r in wanted}:
                    await self._event(conn, "policy.updated", tenant_id, request_id,
                                      {"id": policy_id, "identity_id": row["id"]})
            return row
