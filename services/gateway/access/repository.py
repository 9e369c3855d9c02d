"""SQL of access requests (api.md §14): each change in one transaction with its events (outbox).

A request moves ``pending → approved → expired`` (or ``denied``, ``cancelled``, ``revoked``; ``pending →
expired`` unanswered). Every transition locks the request's row (``FOR UPDATE``), so two approvers, or an
approver and the requester cancelling, can't both act on the same state: the second sees the first's
result (409 ``version_conflict``). Approval binds the policy to the requester as a *grant* — a binding with
``expires_at`` and ``request_id`` — and publishes ``policy.updated`` (replicas forget cached rules) beside
``access.approved``. The grant's end needs nothing: decisions leave it out from ``expires_at`` on
(iam/authorizer.py); the sweeps here only write the status down, delete the ended binding and announce it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.gateway.iam import domain
from services.gateway.iam.store import SchemaRepository
from shared.contracts.times import rfc3339
from shared.errors import BindingNotFound, Forbidden, PolicyNotFound, VersionConflict

#: SQL: the request's status as it is now (an open request whose time has come reads ``expired``)
STATUS_NOW = ("CASE WHEN status = 'pending' AND pending_until <= now() THEN 'expired'"
              " WHEN status = 'approved' AND expires_at <= now() THEN 'expired' ELSE status END")
_COLUMNS = ("id, tenant_id, requester_id, policy_id, policy, duration, duration_seconds, reason,"
            f" {STATUS_NOW} AS status, approvals, approvals_required, pending_until, binding_id, expires_at,"
            " decided_by, comment, decided_at, created_at, updated_at")


def _conflict(row: asyncpg.Record) -> VersionConflict:
    return VersionConflict(f"the request is {row['status']}, no longer pending",
                           details={"status": row["status"], "id": row["id"]})


class AccessRepository(SchemaRepository):
    # -- reading -------------------------------------------------------------------------------------

    async def get(self, tenant_id: str, request_id: str) -> asyncpg.Record:
        """The request, in ``tenant_id`` only (another tenant's id answers as an unknown one)."""
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM access_requests WHERE tenant_id = $1 AND id = $2",
                                       tenant_id, request_id)
        if row is None:
            raise BindingNotFound("no such access request", details={"id": request_id[:64]})
        return row

    async def list_requests(self, tenant_id: str, status: str | None, requester: str | None, policy: str | None,
                   after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM access_requests WHERE tenant_id = $1 AND ($2::text IS NULL OR {STATUS_NOW} = $2)"
            " AND ($3::text IS NULL OR requester_id = $3) AND ($4::text IS NULL OR policy = $4)"
            " AND ($5::text IS NULL OR id > $5) ORDER BY id LIMIT $6",
            tenant_id, status, requester, policy, after, limit)

    async def holds_policy(self, tenant_id: str, policies: list[str], identity_id: str) -> bool:
        """Has ``identity_id`` a standing binding (not a grant) to one of ``policies`` of ``tenant_id``?"""
        return bool(await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM bindings b JOIN policies p ON p.id = b.policy_id WHERE p.tenant_id = $1"
            " AND p.name = ANY($2::text[]) AND b.identity_id = $3 AND b.request_id IS NULL)",
            tenant_id, policies, identity_id))

    # -- changes ---------------------------------------------------------------------------------------

    async def create(self, tenant_id: str, policy: asyncpg.Record, requester_id: str, duration: str,
                     seconds: int, reason: str, pending_for: int, request_id: str) -> asyncpg.Record:
        """A pending request; one open request per (requester, policy): a second is ``version_conflict``."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('access:' || $1 || ':' || $2))",
                               requester_id, policy["id"])
            open_one = await conn.fetchval(
                "SELECT id FROM access_requests WHERE tenant_id = $1 AND requester_id = $2 AND policy_id = $3"
                " AND status = 'pending' AND pending_until > now()", tenant_id, requester_id, policy["id"])
            if open_one is not None:
                raise VersionConflict("you have a pending request for this policy: cancel it or wait for it",
                                      details={"status": "pending", "id": open_one})
            row = await conn.fetchrow(
                "INSERT INTO access_requests (id, tenant_id, requester_id, policy_id, policy, duration,"
                " duration_seconds, reason, status, approvals_required, pending_until)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, now() + make_interval(secs => $10))"
                f" RETURNING {_COLUMNS}", domain.new_id("acr"), tenant_id, requester_id, policy["id"],
                policy["name"], duration, seconds, reason, int(policy["request"]["approvals"]), pending_for)
            await self._announce(conn, "access.requested", row, request_id, reason=reason)
            return row

    async def approve(self, tenant_id: str, request_id: str, approver_id: str, comment: str | None,
                      trace: str) -> asyncpg.Record:
        """Count one approval; the ``approvals``-th distinct one grants the policy until now + duration."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, tenant_id, request_id)
            if row["status"] != "pending":
                raise _conflict(row)
            policy = await conn.fetchrow("SELECT id, name, request FROM policies WHERE id = $1 FOR SHARE",
                                         row["policy_id"])
            if policy is None:
                raise PolicyNotFound(details={"name": row["policy"]})
            if policy["request"] is None:
                raise Forbidden("the policy is no longer requestable", details={"rule": "not_requestable"})
            approvals = list(row["approvals"])
            if any(a["identity_id"] == approver_id for a in approvals):
                raise Forbidden("you approved this request already: another approver is needed",
                                details={"rule": "distinct_approvers"})
            approvals.append({"identity_id": approver_id, "comment": comment, "at": rfc3339(datetime.now(UTC))})
            required = int(policy["request"]["approvals"])
            if len(approvals) < required:
                return await conn.fetchrow(
                    "UPDATE access_requests SET approvals = $2, approvals_required = $3, updated_at = now()"
                    f" WHERE id = $1 RETURNING {_COLUMNS}", row["id"], approvals, required)
            binding_id = domain.new_id("bnd")
            await conn.execute(
                "INSERT INTO bindings (id, tenant_id, policy_id, identity_id, expires_at, request_id)"
                " VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6)",
                binding_id, tenant_id, row["policy_id"], row["requester_id"], row["duration_seconds"], row["id"])
            done = await conn.fetchrow(
                "UPDATE access_requests SET status = 'approved', approvals = $2, approvals_required = $3,"
                " binding_id = $4, expires_at = now() + make_interval(secs => $5), decided_by = $6, comment = $7,"
                f" decided_at = now(), updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}",
                row["id"], approvals, required, binding_id, row["duration_seconds"], approver_id, comment)
            # who the policy applies to changed: replicas drop their cached decisions
            await self._event(conn, "policy.updated", tenant_id, trace,
                              {"id": row["policy_id"], "name": row["policy"], "binding_id": binding_id})
            await self._announce(conn, "access.approved", done, trace, expires_at=rfc3339(done["expires_at"]),
                                 comment=comment)
            return done

    async def deny(self, tenant_id: str, request_id: str, by: str, comment: str | None, trace: str) -> asyncpg.Record:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, tenant_id, request_id)
            if row["status"] != "pending":
                raise _conflict(row)
            done = await self._close(conn, row, "denied", by, comment)
            await self._announce(conn, "access.denied", done, trace, denied_by=by, comment=comment)
            return done

    async def end(self, tenant_id: str, request_id: str, status: str, by: str, comment: str | None,
                  trace: str) -> asyncpg.Record:
        """``cancelled`` (by the requester: pending or granted) or ``revoked`` (a grant, by an approver or by
        deleting its binding): the grant's binding is deleted in the same transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await self._locked(conn, tenant_id, request_id)
            if row["status"] not in (("pending", "approved") if status == "cancelled" else ("approved",)):
                raise _conflict(row)
            done = await self._close(conn, row, status, by, comment)
            if row["binding_id"] is not None:
                await conn.execute("DELETE FROM bindings WHERE id = $1", row["binding_id"])
                await self._event(conn, "policy.updated", tenant_id, trace,
                                  {"id": row["policy_id"], "name": row["policy"], "binding_id": row["binding_id"]})
            await self._announce(conn, f"access.{status}", done, trace, by=by, comment=comment)
            return done

    # -- the sweeps (shared/jobs.py: every replica runs them, SKIP LOCKED shares the rows) -------------------

    async def expire_unanswered(self, limit: int, trace: str) -> list[asyncpg.Record]:
        """Pending requests nobody answered in time: ``expired``, announced."""
        return await self._expire("status = 'pending' AND pending_until <= now() ORDER BY pending_until",
                                  limit, trace, "unanswered")

    async def end_grants(self, limit: int, trace: str) -> list[asyncpg.Record]:
        """Grants whose end came (no decision has used them since): ``expired``, binding deleted, announced."""
        return await self._expire("status = 'approved' AND expires_at <= now() ORDER BY expires_at",
                                  limit, trace, "ended")

    async def _expire(self, where: str, limit: int, trace: str, why: str) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(f"SELECT id, binding_id FROM access_requests WHERE {where} LIMIT $1"
                                   " FOR UPDATE SKIP LOCKED", limit)
            done = []
            for row in due:
                if row["binding_id"] is not None:
                    await conn.execute("DELETE FROM bindings WHERE id = $1", row["binding_id"])
                ended = await conn.fetchrow("UPDATE access_requests SET status = 'expired', updated_at = now()"
                                            f" WHERE id = $1 RETURNING {_COLUMNS}", row["id"])
                await self._announce(conn, "access.expired", ended, trace, cause=why)
                done.append(ended)
            return done

    # -- helpers ---------------------------------------------------------------------------------------------

    async def _locked(self, conn: asyncpg.Connection, tenant_id: str, request_id: str) -> asyncpg.Record:
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM access_requests WHERE tenant_id = $1 AND id = $2"
                                  " FOR UPDATE", tenant_id, request_id)
        if row is None:
            raise BindingNotFound("no such access request", details={"id": request_id[:64]})
        return row

    @staticmethod
    async def _close(conn: asyncpg.Connection, row: asyncpg.Record, status: str, by: str,
                     comment: str | None) -> asyncpg.Record:
        return await conn.fetchrow(
            "UPDATE access_requests SET status = $2, decided_by = $3, comment = $4, decided_at = now(),"
            f" updated_at = now() WHERE id = $1 RETURNING {_COLUMNS}", row["id"], status, by, comment)

    async def _announce(self, conn: asyncpg.Connection, kind: str, row: asyncpg.Record, trace: str,
                        **extra: Any) -> None:
        """``access.*``: who asked for which policy and for how long, who may approve and who did — never a
        secret. ``approvers``: the policy's (``null``: anyone holding ``approve`` on it)."""
        names = await conn.fetchrow(
            "SELECT (SELECT name FROM identities WHERE id = $1) AS requester_name,"
            " (SELECT request FROM policies WHERE id = $2) AS request", row["requester_id"], row["policy_id"])
        await self._event(conn, kind, row["tenant_id"], trace, {
            "id": row["id"], "status": row["status"], "requester": row["requester_id"],
            "requester_name": names["requester_name"], "policy": row["policy"], "duration": row["duration"],
            "approvals_required": row["approvals_required"],
            "approved_by": [a["identity_id"] for a in row["approvals"]],
            "approvers": (names["request"] or {}).get("approvers"), **extra})
