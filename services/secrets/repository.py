"""The secrets service's SQL. Values are sealed before they reach a statement.

Writes are compare-and-set: the secret's row is locked (``FOR UPDATE``), its
``current_version`` compared with the caller's expectation, and the new
version inserted under the unique ``(tenant, path, version)`` key, with the
event in the same transaction (outbox). A lost race is ``version_conflict``,
never a duplicate version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import asyncpg
import structlog

from services.secrets.domain import ValidWrite, associated_data
from services.secrets.rotation import matching_policy
from shared.contracts import from_row
from shared.contracts.events import Event
from shared.contracts.secrets import SecretMeta
from shared.contracts.times import rfc3339
from shared.crypto import Sealed, seal, unseal
from shared.db import outbox
from shared.errors import (
    NameConflict,
    QuotaExceeded,
    SecretExists,
    SecretNotFound,
    SecretPolicyNotFound,
    VersionConflict,
    VersionNotFound,
)
from shared.keyring import ServiceKeyring

log = structlog.get_logger("coffer.secrets")

#: a secret's answer: the secret's own times (``created_at``/``created_by``: its first write, ``updated_at``: its
#: last change) and the version it shows (its fields, and ``version_created_at``/``version_created_by``: its write)
_META = (
    "s.path, v.version, v.secret_type, v.metadata, v.expires_at, s.created_at, s.created_by,"
    " s.updated_at, s.deleted_at, s.purge_after, v.created_at AS version_created_at,"
    " v.created_by AS version_created_by, v.deleted_at AS version_deleted_at,"
    " v.destroyed_at IS NOT NULL AS version_destroyed"
)
_JOIN_CURRENT = (
    "FROM secrets s JOIN secret_versions v"
    " ON v.tenant_id = s.tenant_id AND v.path = s.path AND v.version = s.current_version"
)


def _meta(row: asyncpg.Record) -> SecretMeta:
    return from_row(SecretMeta, row)


class SecretsStore(Protocol):
    """What the handlers need of storage (``SecretsRepository``; the unit tests' in-memory fake)."""

    async def put(self, tenant_id: str, identity_id: str | None, request_id: str, path: str, write: ValidWrite,
                  expected: int | None, max_secrets: int | None = None,
                  check: PolicyCheck | None = None) -> tuple[bool, SecretMeta]: ...

    async def get(self, tenant_id: str, path: str, version: int | None) -> tuple[SecretMeta, bytes]: ...

    async def versions(self, tenant_id: str, path: str, before: int | None, limit: int) -> list[SecretMeta]: ...

    async def list(self, tenant_id: str, prefix: str, after: str | None, limit: int) -> list[SecretMeta]: ...

    async def soft_delete(self, tenant_id: str, request_id: str, path: str, retention: int) -> None: ...

    async def restore(self, tenant_id: str, request_id: str, path: str) -> SecretMeta: ...

    async def purge(self, tenant_id: str, request_id: str, path: str) -> None: ...

    async def change_versions(self, tenant_id: str, request_id: str, path: str, versions: Sequence[int] | None,
                              change: str) -> None: ...

    async def put_policy(self, tenant_id: str, values: dict[str, Any], *, create: bool) -> asyncpg.Record: ...

    async def policy(self, tenant_id: str, name: str) -> asyncpg.Record: ...

    async def list_policies(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]: ...

    async def delete_policy(self, tenant_id: str, name: str) -> None: ...


#: the tenant's rotation and secret policies in one round trip, each kind under its advisory lock (shared:
#: policy changes take it exclusively). Locks in the one order every path takes (rotation, then secret
#: policies, then the row), and taken even when the tenant has no policy: the lock is the preserved
#: side of a left join, so it is always evaluated, whatever plan is chosen.
_RULES = (
    "SELECT 'rotation' AS kind, to_jsonb(p) AS policy FROM (SELECT pg_advisory_xact_lock_shared("
    "hashtext('rotation-policies:' || $1))) AS locked LEFT JOIN rotation_policies p ON p.tenant_id = $1"
    " UNION ALL SELECT 'secret', to_jsonb(p) FROM (SELECT pg_advisory_xact_lock_shared("
    "hashtext('secret-policies:' || $1))) AS locked LEFT JOIN secret_policies p ON p.tenant_id = $1"
)
#: a write's check against the tenant's secret policies (raises when one is broken)
PolicyCheck = Callable[[Sequence[asyncpg.Record]], None]
#: one secret's versions changing state on their own (``change_versions``): the rows that changed
_VERSION_CHANGES = {
    "delete": "UPDATE secret_versions SET deleted_at = now() WHERE tenant_id = $1 AND path = $2"
              " AND version = ANY($3::int[]) AND deleted_at IS NULL AND destroyed_at IS NULL RETURNING version",
    "undelete": "UPDATE secret_versions SET deleted_at = NULL WHERE tenant_id = $1 AND path = $2"
                " AND version = ANY($3::int[]) AND deleted_at IS NOT NULL AND destroyed_at IS NULL RETURNING version",
    "destroy": "UPDATE secret_versions SET destroyed_at = now(), nonce = '', ciphertext = ''"
               " WHERE tenant_id = $1 AND path = $2 AND version = ANY($3::int[]) AND destroyed_at IS NULL"
               " RETURNING version",
}
_VERSION_EVENTS = {"delete": "deleted", "undelete": "restored", "destroy": "destroyed"}
#: secret policies, and rotation policies, per tenant: every write is matched against all of them
MAX_POLICIES = 100
_POLICY = "name, path_pattern, allowed_types, require_expiry, max_ttl, min_length, created_at, updated_at"


async def named(pool: asyncpg.Pool, table: str, columns: str, tenant_id: str, name: str) -> asyncpg.Record | None:
    """One of a tenant's named rows (a secret or rotation policy), or ``None``."""
    return await pool.fetchrow(f"SELECT {columns} FROM {table} WHERE tenant_id = $1 AND name = $2", tenant_id, name)


async def named_page(pool: asyncpg.Pool, table: str, columns: str, tenant_id: str, after: str | None,
                     limit: int) -> list[asyncpg.Record]:
    """A page of a tenant's named rows in name order, after ``after``."""
    return list(await pool.fetch(
        f"SELECT {columns} FROM {table} WHERE tenant_id = $1 AND ($2::text IS NULL OR name > $2)"
        " ORDER BY name LIMIT $3", tenant_id, after, limit))


class SecretsRepository:
    def __init__(self, pool: asyncpg.Pool, kms: ServiceKeyring, schema: str) -> None:
        self.pool = pool
        self.kms = kms
        self.schema = schema

    async def _event(self, conn: asyncpg.Connection, kind: str, tenant_id: str, request_id: str,
                     path: str, version: int, secret_type: str) -> None:
        await outbox.add(conn, Event(
            type=f"secret.{kind}", tenant_id=tenant_id, request_id=request_id,
            data={"path": path, "version": version, "secret_type": secret_type},
        ), schema=self.schema)

    # -- writes ----------------------------------------------------------------

    async def put(self, tenant_id: str, identity_id: str | None, request_id: str, path: str,
                  write: ValidWrite, expected: int | None, max_secrets: int | None = None,
                  check: PolicyCheck | None = None) -> tuple[bool, SecretMeta]:
        """Write a new version; ``(created, metadata)``."""
        async with self.pool.acquire() as conn, conn.transaction():
            return await self.write(conn, tenant_id, identity_id, request_id, path, write, expected, max_secrets,
                                    check)

    async def write(self, conn: asyncpg.Connection, tenant_id: str, identity_id: str | None, request_id: str,
                    path: str, write: ValidWrite, expected: int | None, max_secrets: int | None = None,
                    check: PolicyCheck | None = None, *, rotated_by: str | None = None) -> tuple[bool, SecretMeta]:
        """A new version, in the caller's transaction. ``check`` sees the tenant's secret policies, read
        here under the lock policy changes take exclusively (``_RULES``): a policy whose create returned
        applies to this write. The rotation policy the path follows (read likewise) schedules its next
        rotation; ``rotated_by`` names the policy when this write is a rotation (``secret.rotated``)."""
        rules = await conn.fetch(_RULES, tenant_id)
        if check is not None:
            check([r["policy"] for r in rules if r["kind"] == "secret" and r["policy"] is not None])
        rotation = matching_policy([r["policy"] for r in rules if r["kind"] == "rotation" and r["policy"] is not None],
                                   path)
        row = await conn.fetchrow(
            "SELECT current_version, deleted_at, purge_after FROM secrets"
            " WHERE tenant_id = $1 AND path = $2 FOR UPDATE", tenant_id, path)
        if row is None and max_secrets is not None:
            # creates of one tenant queue here, so two at the limit can't both pass
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('secrets-quota:' || $1))", tenant_id)
            count = await conn.fetchval("SELECT count(*) FROM secrets WHERE tenant_id = $1", tenant_id)
            if count >= max_secrets:
                raise QuotaExceeded("the tenant's max_secrets quota is reached",
                                    details={"quota": "max_secrets", "limit": max_secrets})
        if row is None:
            inserted = await conn.fetchval(
                "INSERT INTO secrets (tenant_id, path, current_version, created_by)"
                " VALUES ($1, $2, 0, $3) ON CONFLICT DO NOTHING RETURNING 1",
                tenant_id, path, identity_id)
            if inserted is None:  # a concurrent writer created it first; take its lock
                row = await conn.fetchrow(
                    "SELECT current_version, deleted_at, purge_after FROM secrets"
                    " WHERE tenant_id = $1 AND path = $2 FOR UPDATE", tenant_id, path)
        if row is not None and row["deleted_at"] is not None:
            raise SecretExists(
                "a deleted secret is kept at this path until it is purged",
                details={"path": path, "purge_after": rfc3339(row["purge_after"])})
        current = 0 if row is None else row["current_version"]
        if expected is not None and expected != current:
            raise VersionConflict(
                "the secret changed since the expected version",
                details={"path": path, "expected_version": expected, "current_version": current})
        version = current + 1
        sealed = seal(self.kms.tenant(tenant_id), write.plaintext, associated_data(tenant_id, path, version))
        # the version and the pointer to it in one round trip
        meta = await conn.fetchrow(
            "WITH v AS (INSERT INTO secret_versions (tenant_id, path, version, secret_type, metadata,"
            " expires_at, created_by, kek_id, wrapped_key, nonce, ciphertext)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *)"
            " UPDATE secrets s SET current_version = $3, updated_at = now(), rotation_policy = $12,"
            " rotate_after = now() + make_interval(secs => $13), rotation_attempts = 0, rotation_error = NULL"
            " FROM v WHERE s.tenant_id = $1 AND s.path = $2"
            f" RETURNING {_META}",
            tenant_id, path, version, write.secret_type, write.metadata, write.expires_at,
            identity_id, sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext,
            rotation["name"] if rotation else None, float(rotation["interval_seconds"]) if rotation else None)
        if rotated_by is not None:
            await outbox.add(conn, Event(type="secret.rotated", tenant_id=tenant_id, request_id=request_id,
                                         data={"path": path, "version": version, "rotation_policy": rotated_by}),
                             schema=self.schema)
        else:
            await self._event(conn, "created" if version == 1 else "updated", tenant_id, request_id,
                              path, version, write.secret_type)
        return version == 1, _meta(meta)

    async def soft_delete(self, tenant_id: str, request_id: str, path: str, retention: int) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE secrets s SET deleted_at = now(), purge_after = now() + make_interval(secs => $3)"
                " FROM secret_versions v WHERE s.tenant_id = $1 AND s.path = $2 AND s.deleted_at IS NULL"
                " AND v.tenant_id = s.tenant_id AND v.path = s.path AND v.version = s.current_version"
                " RETURNING v.version, v.secret_type", tenant_id, path, float(retention))
            if row is None:
                raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
            await self._event(conn, "deleted", tenant_id, request_id, path, row["version"], row["secret_type"])

    async def restore(self, tenant_id: str, request_id: str, path: str) -> SecretMeta:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"SELECT {_META} {_JOIN_CURRENT} WHERE s.tenant_id = $1 AND s.path = $2 FOR UPDATE OF s",
                tenant_id, path)
            if row is None:
                raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
            if row["deleted_at"] is None:
                return _meta(row)  # nothing to undo: restoring is idempotent
            await conn.execute(
                "UPDATE secrets SET deleted_at = NULL, purge_after = NULL, updated_at = now()"
                " WHERE tenant_id = $1 AND path = $2", tenant_id, path)
            await self._event(conn, "restored", tenant_id, request_id, path, row["version"], row["secret_type"])
            restored = await conn.fetchrow(
                f"SELECT {_META} {_JOIN_CURRENT} WHERE s.tenant_id = $1 AND s.path = $2", tenant_id, path)
            return _meta(restored)

    async def purge(self, tenant_id: str, request_id: str, path: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._purge(conn, tenant_id, request_id, path)

    async def change_versions(self, tenant_id: str, request_id: str, path: str, versions: Sequence[int] | None,
                              change: str) -> None:
        """``delete``, ``undelete`` or ``destroy`` some versions of a live secret (``None``: its current one).
        Versions it doesn't have, or that are so already, are left; a change publishes
        ``secret.versions_<deleted|restored|destroyed>`` naming the versions it changed. Destroying drops the
        version's ciphertext for good (its data key, useless without it, stays until the row goes)."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT current_version FROM secrets WHERE tenant_id = $1 AND path = $2 AND deleted_at IS NULL"
                " FOR UPDATE", tenant_id, path)
            if row is None:
                raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
            wanted = sorted(set(versions)) if versions is not None else [row["current_version"]]
            changed = await conn.fetch(_VERSION_CHANGES[change], tenant_id, path, wanted)
            if changed:
                await outbox.add(conn, Event(
                    type=f"secret.versions_{_VERSION_EVENTS[change]}", tenant_id=tenant_id, request_id=request_id,
                    data={"path": path, "versions": sorted(r["version"] for r in changed)}), schema=self.schema)


    # -- secret policies -------------------------------------------------------------------------

    async def put_policy(self, tenant_id: str, values: dict[str, Any], *, create: bool) -> asyncpg.Record:
        """Create (``name_conflict`` if it exists) or replace a policy; writes wait while this commits."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('secret-policies:' || $1))", tenant_id)
            if await conn.fetchval("SELECT count(*) FROM secret_policies WHERE tenant_id = $1 AND name <> $2",
                                   tenant_id, values["name"]) >= MAX_POLICIES:  # every write checks them all
                raise QuotaExceeded(f"a tenant has at most {MAX_POLICIES} secret policies",
                                    details={"quota": "secret_policies", "limit": MAX_POLICIES})
            row = await conn.fetchrow(
                "INSERT INTO secret_policies (tenant_id, name, path_pattern, allowed_types, require_expiry, max_ttl,"
                " min_length) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant_id, name) DO "
                + ("NOTHING" if create else "UPDATE SET path_pattern = $3, allowed_types = $4, require_expiry = $5,"
                   " max_ttl = $6, min_length = $7, updated_at = now()")
                + f" RETURNING {_POLICY}", tenant_id, values["name"], values["path_pattern"], values["allowed_types"],
                values["require_expiry"], values["max_ttl"], values["min_length"])
            if row is None:
                raise NameConflict(f"a secret policy named '{values['name']}' exists", details={"name": values["name"]})
            return row

    async def policy(self, tenant_id: str, name: str) -> asyncpg.Record:
        row = await named(self.pool, "secret_policies", _POLICY, tenant_id, name)
        if row is None:
            raise SecretPolicyNotFound(f"secret policy '{name[:200]}' not found", details={"name": name[:200]})
        return row

    async def list_policies(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await named_page(self.pool, "secret_policies", _POLICY, tenant_id, after, limit)

    async def delete_policy(self, tenant_id: str, name: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('secret-policies:' || $1))", tenant_id)
            if await conn.fetchval("DELETE FROM secret_policies WHERE tenant_id = $1 AND name = $2 RETURNING 1",
                                   tenant_id, name) is None:
                raise SecretPolicyNotFound(f"secret policy '{name[:200]}' not found", details={"name": name[:200]})
    async def _purge(self, conn: asyncpg.Connection, tenant_id: str, request_id: str, path: str) -> None:
        row = await conn.fetchrow(
            f"SELECT v.version, v.secret_type {_JOIN_CURRENT} WHERE s.tenant_id = $1 AND s.path = $2",
            tenant_id, path)
        if row is None:
            raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
        await conn.execute("DELETE FROM secrets WHERE tenant_id = $1 AND path = $2", tenant_id, path)
        await self._event(conn, "purged", tenant_id, request_id, path, row["version"], row["secret_type"])

    # -- reads -----------------------------------------------------------------

    async def get(self, tenant_id: str, path: str, version: int | None) -> tuple[SecretMeta, bytes]:
        """Metadata and plaintext of the current (or a given) version of a live secret."""
        row = await self.pool.fetchrow(
            "SELECT s.path, v.version, v.secret_type, v.metadata, v.expires_at, s.created_at,"
            " s.created_by, s.updated_at, s.deleted_at, s.purge_after, s.current_version,"
            " v.created_at AS version_created_at, v.created_by AS version_created_by,"
            " v.deleted_at AS version_deleted_at, v.destroyed_at IS NOT NULL AS version_destroyed,"
            " v.kek_id, v.wrapped_key, v.nonce, v.ciphertext"
            " FROM secrets s LEFT JOIN secret_versions v ON v.tenant_id = s.tenant_id"
            " AND v.path = s.path AND v.version = coalesce($3, s.current_version)"
            " WHERE s.tenant_id = $1 AND s.path = $2 AND s.deleted_at IS NULL",
            tenant_id, path, version)
        if row is None:
            raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
        if row["version"] is None:
            raise VersionNotFound(f"Secret '{path}' has no version {version}",
                                  details={"path": path, "version": version})
        if row["version_deleted_at"] is not None or row["version_destroyed"]:
            gone = "destroyed" if row["version_destroyed"] else "deleted"
            raise VersionNotFound(f"version {row['version']} of secret '{path}' is {gone}", details={
                "path": path, "version": row["version"], gone: True, "version_created_at": rfc3339(
                    row["version_created_at"]), "version_deleted_at": rfc3339(row["version_deleted_at"])
                if row["version_deleted_at"] is not None else None, "metadata": row["metadata"]})
        sealed = Sealed(row["kek_id"], row["wrapped_key"], row["nonce"], row["ciphertext"])
        return _meta(row), unseal(self.kms.tenant(tenant_id), sealed, associated_data(tenant_id, path, row["version"]))

    async def versions(self, tenant_id: str, path: str, before: int | None, limit: int) -> list[SecretMeta]:
        """Versions newest first, those below ``before`` when continuing a page.

        Each item is a version: its ``created_at``/``created_by``/``updated_at`` are the version's write (as they
        always were), the same as its ``version_created_at``/``version_created_by``."""
        rows = await self.pool.fetch(
            "SELECT s.path, v.version, v.secret_type, v.metadata, v.expires_at,"
            " v.created_at, v.created_by, v.created_at AS updated_at, s.deleted_at, s.purge_after,"
            " v.created_at AS version_created_at, v.created_by AS version_created_by,"
            " v.deleted_at AS version_deleted_at, v.destroyed_at IS NOT NULL AS version_destroyed"
            " FROM secrets s JOIN secret_versions v ON v.tenant_id = s.tenant_id AND v.path = s.path"
            " WHERE s.tenant_id = $1 AND s.path = $2 AND s.deleted_at IS NULL"
            " AND ($3::int IS NULL OR v.version < $3) ORDER BY v.version DESC LIMIT $4",
            tenant_id, path, before, limit)
        if not rows and before is None:
            raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
        return [_meta(r) for r in rows]

    async def list(self, tenant_id: str, prefix: str, after: str | None, limit: int) -> list[SecretMeta]:
        """Live secrets whose path starts with ``prefix``, in path order, after ``after``."""
        rows = await self.pool.fetch(
            f"SELECT {_META} {_JOIN_CURRENT} WHERE s.tenant_id = $1 AND s.deleted_at IS NULL"
            " AND s.path >= $2 AND starts_with(s.path, $2) AND ($3::text IS NULL OR s.path > $3)"
            " ORDER BY s.path LIMIT $4", tenant_id, prefix, after, limit)
        return [_meta(r) for r in rows]

    # -- lifecycle jobs (claimed once across replicas) -------------------------

    async def publish_expired(self, batch: int = 100) -> int:
        """``secret.expired`` once per version whose ``expires_at`` passed."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT tenant_id, path, version, secret_type FROM secret_versions"
                " WHERE expires_at <= now() AND expired_event_at IS NULL"
                " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED", batch)
            for r in rows:
                await conn.execute(
                    "UPDATE secret_versions SET expired_event_at = now()"
                    " WHERE tenant_id = $1 AND path = $2 AND version = $3", r["tenant_id"], r["path"], r["version"])
                await self._event(conn, "expired", r["tenant_id"], "req_sweeper", r["path"], r["version"],
                                  r["secret_type"])
            return len(rows)

    async def purge_due(self, batch: int = 100) -> int:
        """Destroy soft-deleted secrets whose retention ended."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT tenant_id, path FROM secrets WHERE deleted_at IS NOT NULL AND purge_after <= now()"
                " ORDER BY purge_after LIMIT $1 FOR UPDATE SKIP LOCKED", batch)
            for r in rows:
                await self._purge(conn, r["tenant_id"], "req_retention", r["path"])
            return len(rows)

    # -- key-encryption-key rotation ------------------------------------------

