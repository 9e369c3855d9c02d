"""Rotation's SQL (api.md §5.2): rotation policies, ``:rotate``, and the scheduler's sweep.

Locks, in the one order every path takes them so none waits on another in a
circle: the tenant's rotation policies (advisory, shared by writes and
rotations, exclusive for a policy change), then the tenant's secret policies
(same), then the secret's row. A policy change re-schedules the tenant's
secrets in its own transaction; a write (``SecretsRepository.write``) schedules
its secret. The scheduler claims a due secret with ``FOR UPDATE SKIP LOCKED``
and checks it is still due, so across replicas each due secret is rotated once;
a failed rotation is recorded (attempts, error code, ``secret.rotation_failed``)
and due again after a backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog

from services.secrets.domain import check_policies
from services.secrets.repository import MAX_POLICIES, SecretsRepository, named, named_page
from services.secrets.rotation import matching_policy, rotated_write
from shared.contracts.events import Event
from shared.contracts.secrets import SecretMeta
from shared.contracts.times import rfc3339
from shared.db import outbox
from shared.errors import CofferError, NameConflict, QuotaExceeded, RotationPolicyNotFound, SecretNotFound
from shared.jobs import backoff
from shared.metrics import SECRET_ROTATIONS

log = structlog.get_logger("coffer.secrets.rotation")

_POLICY = 'name, path_pattern, "interval", interval_seconds, generator, created_at, updated_at'
_CURRENT = (
    "SELECT s.path, s.current_version AS version, v.secret_type, v.metadata, v.expires_at, v.created_at,"
    " s.rotation_attempts FROM secrets s JOIN secret_versions v ON v.tenant_id = s.tenant_id AND v.path = s.path"
    " AND v.version = s.current_version WHERE s.tenant_id = $1 AND s.path = $2 AND s.deleted_at IS NULL"
)


async def _policies(conn: asyncpg.Connection, tenant_id: str, *, exclusive: bool = False) -> list[asyncpg.Record]:
    """The tenant's rotation policies, under its rotation lock (held to the end of the transaction)."""
    lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    rows = await conn.fetch(  # the lock is the left join's preserved side: taken even with no policy
        f"SELECT {', '.join('p.' + c.strip() for c in _POLICY.split(','))} FROM (SELECT {lock}("
        "hashtext('rotation-policies:' || $1))) AS locked LEFT JOIN rotation_policies p ON p.tenant_id = $1",
        tenant_id)
    return [r for r in rows if r["name"] is not None]


def _not_found(name: str) -> RotationPolicyNotFound:
    return RotationPolicyNotFound(f"rotation policy '{name[:200]}' not found", details={"name": name[:200]})


class RotationStore:
    def __init__(self, secrets: SecretsRepository, *, retry_base: float = 60.0, retry_cap: float = 3600.0) -> None:
        self.secrets = secrets
        self.pool = secrets.pool
        self.retry_base = retry_base
        self.retry_cap = retry_cap

    # -- policies ----------------------------------------------------------------------------------

    async def put_policy(self, tenant_id: str, values: dict[str, Any], seconds: int, *,
                         create: bool) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            others = [p for p in await _policies(conn, tenant_id, exclusive=True) if p["name"] != values["name"]]
            if len(others) >= MAX_POLICIES:  # every write matches its path against all of them
                raise QuotaExceeded(f"a tenant has at most {MAX_POLICIES} rotation policies",
                                    details={"quota": "rotation_policies", "limit": MAX_POLICIES})
            row = await conn.fetchrow(
                'INSERT INTO rotation_policies (tenant_id, name, path_pattern, "interval", interval_seconds, generator)'
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, name) DO "
                + ("NOTHING" if create else 'UPDATE SET path_pattern = $3, "interval" = $4, interval_seconds = $5,'
                   " generator = $6, updated_at = now()")
                + f" RETURNING {_POLICY}", tenant_id, values["name"], values["path_pattern"], values["interval"],
                seconds, values["generator"])
            if row is None:
                raise NameConflict(f"a rotation policy named '{values['name']}' exists",
                                   details={"name": values["name"]})
            await self._reschedule(conn, tenant_id)
            return row

    async def policy(self, tenant_id: str, name: str) -> asyncpg.Record:
        row = await named(self.pool, "rotation_policies", _POLICY, tenant_id, name)
        if row is None:
            raise _not_found(name)
        return row

    async def list_policies(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await named_page(self.pool, "rotation_policies", _POLICY, tenant_id, after, limit)

    async def delete_policy(self, tenant_id: str, name: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await _policies(conn, tenant_id, exclusive=True)
            if await conn.fetchval("DELETE FROM rotation_policies WHERE tenant_id = $1 AND name = $2 RETURNING 1",
                                   tenant_id, name) is None:
                raise _not_found(name)
            await self._reschedule(conn, tenant_id)

    async def _reschedule(self, conn: asyncpg.Connection, tenant_id: str) -> None:
        """Each live secret of the tenant follows the policy that now matches it, due ``interval`` after its
        latest version (only the secrets whose schedule changed are written)."""
        policies = await conn.fetch(f"SELECT {_POLICY} FROM rotation_policies WHERE tenant_id = $1", tenant_id)
        rows = await conn.fetch(
            "SELECT s.path, v.created_at, s.rotation_policy, s.rotate_after FROM secrets s JOIN secret_versions v"
            " ON v.tenant_id = s.tenant_id AND v.path = s.path AND v.version = s.current_version"
            " WHERE s.tenant_id = $1 AND s.deleted_at IS NULL", tenant_id)
        paths, names, dues = [], [], []
        for i, row in enumerate(rows):
            if i % 500 == 499:
                await asyncio.sleep(0)  # a large tenant's paths don't hold the loop every tenant shares
            policy = matching_policy(policies, row["path"]) if policies else None
            name = policy["name"] if policy else None
            due = row["created_at"] + timedelta(seconds=policy["interval_seconds"]) if policy else None
            if (name, due) != (row["rotation_policy"], row["rotate_after"]):
                paths.append(row["path"])
                names.append(name)
                dues.append(due)
        if paths:
            await conn.execute(
                "UPDATE secrets s SET rotation_policy = u.name, rotate_after = u.due, rotation_attempts = 0,"
                " rotation_error = NULL FROM unnest($2::text[], $3::text[], $4::timestamptz[]) AS u(path, name, due)"
                " WHERE s.tenant_id = $1 AND s.path = u.path", tenant_id, paths, names, dues)

    # -- rotating ----------------------------------------------------------------------------------

    async def rotate(self, tenant_id: str, identity_id: str | None, request_id: str, path: str) -> SecretMeta:
        """``POST /v1/secrets/{path}:rotate``: the new version's metadata."""
        async with self.pool.acquire() as conn, conn.transaction():
            policies = await _policies(conn, tenant_id)
            current = await conn.fetchrow(_CURRENT + " FOR UPDATE OF s", tenant_id, path)
            if current is None:
                raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
            policy = matching_policy(policies, path)
            if policy is None:
                raise RotationPolicyNotFound(f"no rotation policy matches '{path}'", details={"path": path})
            meta = await self._rotate(conn, tenant_id, identity_id, request_id, current, policy)
        SECRET_ROTATIONS.labels(trigger="request", outcome="ok").inc()
        return meta

    async def _rotate(self, conn: asyncpg.Connection, tenant_id: str, identity_id: str | None, request_id: str,
                      current: Mapping[str, Any], policy: Mapping[str, Any]) -> SecretMeta:
        now = datetime.now(UTC)
        path = current["path"]
        write = rotated_write(current, policy["generator"], now)
        _, meta = await self.secrets.write(
            conn, tenant_id, identity_id, request_id, path, write, current["version"],
            check=lambda rules: check_policies(rules, path, write, now), rotated_by=policy["name"])
        return meta

    async def rotate_due(self, batch: int = 100) -> int:
        """The scheduler's sweep: every secret whose rotation is due, each in its own transaction."""
        due = await self.pool.fetch(
            "SELECT tenant_id, path FROM secrets WHERE rotate_after <= now() AND deleted_at IS NULL"
            " ORDER BY rotate_after LIMIT $1", batch)
        done = 0
        for item in due:
            done += await self._rotate_one(item["tenant_id"], item["path"])
        return done

    async def _rotate_one(self, tenant_id: str, path: str) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            policies = await _policies(conn, tenant_id)
            current = await conn.fetchrow(
                _CURRENT + " AND s.rotate_after <= now() FOR UPDATE OF s SKIP LOCKED", tenant_id, path)
            if current is None:
                return 0  # another replica has it, or did it
            policy = matching_policy(policies, path)
            if policy is None:  # its policy went away in between: nothing is due
                await conn.execute("UPDATE secrets SET rotate_after = NULL, rotation_policy = NULL"
                                   " WHERE tenant_id = $1 AND path = $2", tenant_id, path)
                return 1
            try:
                async with conn.transaction():  # a savepoint: a failed rotation leaves the record of it
                    meta = await self._rotate(conn, tenant_id, None, "req_rotation", current, policy)
            except CofferError as exc:
                await self._failed(conn, tenant_id, path, policy, current["rotation_attempts"] + 1, exc)
                return 1
        SECRET_ROTATIONS.labels(trigger="schedule", outcome="ok").inc()
        log.info("secret_rotated", tenant_id=tenant_id, path=path, version=meta.version,
                 rotation_policy=policy["name"])
        return 1

    async def _failed(self, conn: asyncpg.Connection, tenant_id: str, path: str, policy: Mapping[str, Any],
                      attempt: int, exc: CofferError) -> None:
        delay = backoff(attempt, base=self.retry_base, cap=min(self.retry_cap, float(policy["interval_seconds"])))
        next_at = await conn.fetchval(
            "UPDATE secrets SET rotation_attempts = $3, rotation_error = $4,"
            " rotate_after = now() + make_interval(secs => $5) WHERE tenant_id = $1 AND path = $2"
            " RETURNING rotate_after", tenant_id, path, attempt, exc.code, delay)
        await outbox.add(conn, Event(
            type="secret.rotation_failed", tenant_id=tenant_id, request_id="req_rotation",
            data={"path": path, "rotation_policy": policy["name"], "attempt": attempt, "error": exc.code,
                  "next_attempt_at": rfc3339(next_at)}), schema=self.secrets.schema)
        SECRET_ROTATIONS.labels(trigger="schedule", outcome="failed").inc()
        log.warning("secret_rotation_failed", tenant_id=tenant_id, path=path, rotation_policy=policy["name"],
                    attempt=attempt, error=exc.code, retry_in=round(delay, 1))
