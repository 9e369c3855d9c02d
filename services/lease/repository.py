"""The lease service's SQL. Every read and write names the tenant, but the sweeper's (it works for all).

A lease's row is written before its user exists in the target (``creating``,
locked for the maker) and marked ``revoked``/``expired`` only after the target
confirmed the user gone: whatever dies in between, the sweeper finds a row to
finish the work from. State changes and their events commit together (outbox).
"""

from __future__ import annotations

from typing import Any, TypeAlias

import asyncpg

from shared.contracts.events import Event
from shared.contracts.times import rfc3339
from shared.crypto import Sealed
from shared.db import outbox
from shared.errors import EngineInUse, EngineNotFound, LeaseNotFound, NameConflict, QuotaExceeded, RoleNotFound

Row: TypeAlias = asyncpg.Record

_ENGINE = "tenant_id, name, type, config, created_at, updated_at, admin_rotated_at"
_ENGINE_KEY = _ENGINE + ", kek_id, wrapped_key, nonce, ciphertext"
_LEASE = ("id, tenant_id, engine, role, username, spec, status, end_status, issued_at, expires_at, max_expires_at,"
          " ended_at, attempts")
#: how long a worker holds a lease row while it talks to the target
HOLD_SECONDS = 60
#: statuses of a lease whose user may exist in its target
LIVE = ("creating", "active", "revoking")


class LeaseRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def _event(self, conn: asyncpg.Connection, kind: str, lease: Row | dict[str, Any], request_id: str,
                     **extra: Any) -> None:
        data = {"lease_id": lease["id"], "engine": lease["engine"], "role": lease["role"],
                "expires_at": rfc3339(lease["expires_at"]), **extra}
        await outbox.add(conn, Event(type=kind, tenant_id=lease["tenant_id"], request_id=request_id, data=data),
                         schema=self.schema)

    # -- engines -----------------------------------------------------------------------------

    async def insert_engine(self, tenant_id: str, name: str, kind: str, config: dict[str, Any],
                            sealed: Sealed) -> Row:
        try:
            return await self.pool.fetchrow(
                "INSERT INTO engines (tenant_id, name, type, config, kek_id, wrapped_key, nonce, ciphertext)"
                f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_ENGINE}",
                tenant_id, name, kind, config, sealed.kek_id, sealed.wrapped_key, sealed.nonce,
                sealed.ciphertext)
        except asyncpg.UniqueViolationError:
            raise NameConflict(f"an engine named '{name}' exists", details={"name": name}) from None

    async def engine(self, tenant_id: str, name: str, *, with_key: bool = False) -> Row:
        row = await self.pool.fetchrow(
            f"SELECT {_ENGINE_KEY if with_key else _ENGINE} FROM engines"
            " WHERE tenant_id = $1 AND name = $2 AND NOT tenant_deleted", tenant_id, name)
        if row is None:
            raise EngineNotFound(f"engine '{name[:200]}' not found", details={"name": name[:200]})
        return row

    async def engine_for_lease(self, tenant_id: str, name: str) -> Row | None:
        """An engine with its sealed config, also when its tenant is deleted (the sweeper's)."""
        return await self.pool.fetchrow(f"SELECT {_ENGINE_KEY} FROM engines WHERE tenant_id = $1 AND name = $2",
                                        tenant_id, name)

    async def list_engines(self, tenant_id: str, after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            f"SELECT {_ENGINE} FROM engines WHERE tenant_id = $1 AND NOT tenant_deleted"
            " AND ($2::text IS NULL OR name > $2) ORDER BY name LIMIT $3", tenant_id, after, limit))

    async def replace_engine_secret(self, tenant_id: str, name: str, sealed: Sealed) -> Row:
        row = await self.pool.fetchrow(
            "UPDATE engines SET kek_id = $3, wrapped_key = $4, nonce = $5, ciphertext = $6, updated_at = now(),"
            f" admin_rotated_at = now() WHERE tenant_id = $1 AND name = $2 RETURNING {_ENGINE}",
            tenant_id, name, sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)
        if row is None:
            raise EngineNotFound(f"engine '{name}' not found", details={"name": name})
        return row

    async def delete_engine(self, tenant_id: str, name: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM engines WHERE tenant_id = $1 AND name = $2 AND NOT tenant_deleted"
                                   " FOR UPDATE", tenant_id, name) is None:
                raise EngineNotFound(f"engine '{name[:200]}' not found", details={"name": name[:200]})
            live = await conn.fetchval("SELECT count(*) FROM leases WHERE tenant_id = $1 AND engine = $2"
                                       " AND status = ANY($3::text[])", tenant_id, name, list(LIVE))
            if live:
                raise EngineInUse("the engine has leases that are not revoked yet",
                                  details={"name": name, "leases": live})
            await conn.execute("DELETE FROM leases WHERE tenant_id = $1 AND engine = $2", tenant_id, name)
            await conn.execute("DELETE FROM engines WHERE tenant_id = $1 AND name = $2", tenant_id, name)

    # -- roles -------------------------------------------------------------------------------

    async def put_role(self, tenant_id: str, engine: str, name: str, spec: dict[str, Any]) -> Row:
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM engines WHERE tenant_id = $1 AND name = $2 AND NOT tenant_deleted"
                                   " FOR SHARE", tenant_id, engine) is None:
                raise EngineNotFound(f"engine '{engine[:200]}' not found", details={"name": engine[:200]})
            return await conn.fetchrow(
                "INSERT INTO roles (tenant_id, engine, name, spec) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (tenant_id, engine, name) DO UPDATE SET spec = EXCLUDED.spec, updated_at = now()"
                " RETURNING engine, name, spec, created_at, updated_at", tenant_id, engine, name, spec)

    async def role(self, tenant_id: str, engine: str, name: str) -> Row:
        row = await self.pool.fetchrow(
            "SELECT r.engine, r.name, r.spec, r.created_at, r.updated_at FROM roles r JOIN engines e"
            " ON e.tenant_id = r.tenant_id AND e.name = r.engine AND NOT e.tenant_deleted"
            " WHERE r.tenant_id = $1 AND r.engine = $2 AND r.name = $3", tenant_id, engine, name)
        if row is None:
            await self.engine(tenant_id, engine)  # engine_not_found first, when it is the engine that is missing
            raise RoleNotFound(f"role '{name[:200]}' not found", details={"engine": engine[:200], "name": name[:200]})
        return row

    async def issuing(self, tenant_id: str, engine: str, name: str) -> tuple[Row, dict[str, Any]]:
        """What credentials need, in one round trip: the engine with its sealed config, and the role."""
        row = await self.pool.fetchrow(
            f"SELECT {', '.join('e.' + c.strip() for c in _ENGINE_KEY.split(','))}, r.spec AS role_spec"
            " FROM engines e JOIN roles r ON r.tenant_id = e.tenant_id AND r.engine = e.name"
            " WHERE e.tenant_id = $1 AND e.name = $2 AND r.name = $3 AND NOT e.tenant_deleted", tenant_id, engine, name)
        if row is None:
            await self.role(tenant_id, engine, name)  # says which of the two is missing
        return row, {"name": name, "spec": row["role_spec"]}

    async def list_roles(self, tenant_id: str, engine: str, after: str | None, limit: int) -> list[Row]:
        await self.engine(tenant_id, engine)
        return list(await self.pool.fetch(
            "SELECT engine, name, spec, created_at, updated_at FROM roles WHERE tenant_id = $1 AND engine = $2"
            " AND ($3::text IS NULL OR name > $3) ORDER BY name LIMIT $4", tenant_id, engine, after, limit))

    async def delete_role(self, tenant_id: str, engine: str, name: str) -> None:
        await self.engine(tenant_id, engine)
        if await self.pool.fetchval("DELETE FROM roles WHERE tenant_id = $1 AND engine = $2 AND name = $3"
                                    " RETURNING 1", tenant_id, engine, name) is None:
            raise RoleNotFound(f"role '{name[:200]}' not found", details={"engine": engine, "name": name[:200]})

    # -- leases --------------------------------------------------------------------------------

    async def begin_lease(self, lease: dict[str, Any], max_leases: int | None) -> None:
        """The lease's row, ``creating`` and held by its maker, before the user exists in the target."""
        async with self.pool.acquire() as conn, conn.transaction():
            if max_leases is not None:
                # credentials of one tenant queue here, so two at the limit can't both pass
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('lease-quota:' || $1))", lease["tenant_id"])
                live = await conn.fetchval("SELECT count(*) FROM leases WHERE tenant_id = $1"
                                           " AND status IN ('creating', 'active')", lease["tenant_id"])
                if live >= max_leases:
                    raise QuotaExceeded("the tenant's max_leases quota is reached",
                                        details={"quota": "max_leases", "limit": max_leases},
                                        headers={"Retry-After": "60"})
            await conn.execute(
                "INSERT INTO leases (id, tenant_id, engine, role, username, spec, status, issued_at, expires_at,"
                " max_expires_at, next_attempt_at, locked_until) VALUES ($1, $2, $3, $4, $5, $6, 'creating',"
                " $7, $8, $9, now() + make_interval(secs => $10), now() + make_interval(secs => $10))",
                lease["id"], lease["tenant_id"], lease["engine"], lease["role"], lease["username"],
                lease["spec"], lease["issued_at"], lease["expires_at"], lease["max_expires_at"], HOLD_SECONDS)

    async def activate(self, lease: dict[str, Any], request_id: str) -> None:
        """The user exists: the lease is active, and ``lease.created`` goes out with it."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE leases SET status = 'active', next_attempt_at = NULL, locked_until = NULL"
                               " WHERE id = $1 AND status = 'creating'", lease["id"])
            await self._event(conn, "lease.created", lease, request_id,
                              max_expires_at=rfc3339(lease["max_expires_at"]))

    async def forget(self, lease_id: str) -> None:
        """A lease whose user was never made (or was removed at once): no trace but the audit's."""
        await self.pool.execute("DELETE FROM leases WHERE id = $1 AND status = 'creating'", lease_id)

    async def lease(self, tenant_id: str, lease_id: str) -> Row:
        row = await self.pool.fetchrow(f"SELECT {_LEASE} FROM leases WHERE tenant_id = $1 AND id = $2"
                                       " AND status <> 'creating'", tenant_id, lease_id)
        if row is None:
            raise LeaseNotFound(f"lease '{lease_id[:64]}' not found", details={"id": lease_id[:64]})
        return row

    async def list_leases(self, tenant_id: str, engine: str | None, role: str | None, after: str | None,
                          limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            f"SELECT {_LEASE} FROM leases WHERE tenant_id = $1 AND status <> 'creating'"
            " AND ($2::text IS NULL OR engine = $2) AND ($3::text IS NULL OR role = $3)"
            " AND ($4::text IS NULL OR id > $4) ORDER BY id LIMIT $5", tenant_id, engine, role, after, limit))

    async def renew(self, tenant_id: str, lease_id: str, increment: int | None, default_ttl: int,
                    request_id: str) -> tuple[Row, str | None]:
        """``(lease, None)`` renewed, or ``(lease, why)`` when it can't be (ended, or its time is up)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT {_LEASE} FROM leases WHERE tenant_id = $1 AND id = $2"
                                      " AND status <> 'creating' FOR UPDATE", tenant_id, lease_id)
            if row is None:
                raise LeaseNotFound(f"lease '{lease_id[:64]}' not found", details={"id": lease_id[:64]})
            if row["status"] != "active" or row["expires_at"] <= await conn.fetchval("SELECT now()"):
                return row, "ended"
            seconds = increment if increment is not None else default_ttl
            row = await conn.fetchrow(
                "UPDATE leases SET expires_at = LEAST(max_expires_at, date_trunc('second', now())"
                f" + make_interval(secs => $2)) WHERE id = $1 RETURNING {_LEASE}", lease_id, seconds)
            await self._event(conn, "lease.renewed", row, request_id)
            return row, None

    async def start_revoke(self, tenant_id: str, lease_id: str) -> tuple[Row, bool]:
        """Mark the lease for removal and hold it: ``(lease, True)`` when this caller is to remove its user
        now; ``(lease, False)`` when it has ended already or another worker holds it. A lease held by a
        worker stays held: a second revoke waits for none, it answers what is under way."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(f"SELECT {_LEASE}, locked_until > now() AS held FROM leases"
                                      " WHERE tenant_id = $1 AND id = $2 AND status <> 'creating' FOR UPDATE",
                                      tenant_id, lease_id)
            if row is None:
                raise LeaseNotFound(f"lease '{lease_id[:64]}' not found", details={"id": lease_id[:64]})
            if row["status"] in ("revoked", "expired") or row["held"]:
                return row, False
            row = await conn.fetchrow(
                "UPDATE leases SET status = 'revoking', end_status = COALESCE(end_status, 'revoked'),"
                " next_attempt_at = now(), locked_until = now() + make_interval(secs => $2)"
                f" WHERE id = $1 RETURNING {_LEASE}", lease_id, HOLD_SECONDS)
            return row, True

    async def revoke_prefix(self, tenant_id: str, engine: str, role: str | None) -> int:
        """Every active lease of the engine (and role) marked for removal; the sweeper does them."""
        await self.engine(tenant_id, engine)
        status = await self.pool.execute(
            "UPDATE leases SET status = 'revoking', end_status = 'revoked', next_attempt_at = now()"
            " WHERE tenant_id = $1 AND engine = $2 AND ($3::text IS NULL OR role = $3) AND status = 'active'",
            tenant_id, engine, role)
        return int(status.split()[-1])

    async def claim_due(self, limit: int) -> list[Row]:
        """Leases whose users are due for removal, held for this worker (another replica skips them):
        active ones past their expiry (they end ``expired``), removals due again, makers that died."""
        return list(await self.pool.fetch(
            "WITH due AS (SELECT id FROM leases WHERE ((status = 'active' AND expires_at <= now())"
            " OR (status IN ('creating', 'revoking') AND next_attempt_at <= now()))"
            " AND (locked_until IS NULL OR locked_until < now())"
            " ORDER BY COALESCE(next_attempt_at, expires_at) LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " UPDATE leases l SET end_status = CASE l.status WHEN 'active' THEN 'expired' WHEN 'creating' THEN"
            " 'revoked' ELSE l.end_status END, status = 'revoking', next_attempt_at = COALESCE(l.next_attempt_at,"
            " now()), locked_until = now() + make_interval(secs => $2) FROM due WHERE l.id = due.id"
            f" RETURNING {', '.join('l.' + c.strip() for c in _LEASE.split(','))}", limit, HOLD_SECONDS))

    async def ended(self, lease: Row, request_id: str) -> Row:
        """The target confirmed the user gone: the lease ends as it was meant to, with its event."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE leases SET status = end_status, ended_at = now(), locked_until = NULL, next_attempt_at = NULL,"
                f" last_error = NULL WHERE id = $1 AND status = 'revoking' RETURNING {_LEASE}", lease["id"])
            if row is None:
                return await conn.fetchrow(f"SELECT {_LEASE} FROM leases WHERE id = $1", lease["id"])
            await self._event(conn, f"lease.{row['end_status']}", row, request_id)
            return row

    async def retry_later(self, lease_id: str, delay: float, error: str) -> None:
        await self.pool.execute(
            "UPDATE leases SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2),"
            " locked_until = NULL, last_error = $3 WHERE id = $1 AND status = 'revoking'", lease_id, delay, error)

    # -- a deleted tenant ------------------------------------------------------------------------

    async def tenant_deleted(self, tenant_id: str) -> int:
        """Every live lease of the tenant marked for removal, its engines hidden; ``the leases marked``."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("UPDATE engines SET tenant_deleted = true WHERE tenant_id = $1", tenant_id)
            status = await conn.execute(
                "UPDATE leases SET status = 'revoking', end_status = COALESCE(end_status, 'revoked'),"
                " next_attempt_at = now() WHERE tenant_id = $1 AND status = 'active'", tenant_id)
            return int(status.split()[-1])

    async def purge_deleted_tenants(self, limit: int) -> int:
        """Engines of deleted tenants whose leases are all gone from their targets: deleted, with their rows."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT tenant_id, name FROM engines e WHERE tenant_deleted AND NOT EXISTS (SELECT 1 FROM leases l"
                " WHERE l.tenant_id = e.tenant_id AND l.engine = e.name AND l.status = ANY($2::text[]))"
                " LIMIT $1 FOR UPDATE SKIP LOCKED", limit, list(LIVE))
            for row in rows:
                await conn.execute("DELETE FROM leases WHERE tenant_id = $1 AND engine = $2", *row)
                await conn.execute("DELETE FROM engines WHERE tenant_id = $1 AND name = $2", *row)
            return len(rows)
