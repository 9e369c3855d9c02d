"""The gateway's access-request jobs: unanswered requests expire, ended grants are written down.

Neither decides anything: a grant stops counting at its ``expires_at`` in every decision on every replica
(iam/authorizer.py) whether these ran or not. They set the status, delete the ended binding, publish
``access.expired`` (so a chat hears of it) and leave an audit entry per request — every replica runs
them, ``SKIP LOCKED`` gives each row to one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from services.gateway.access.repository import AccessRepository
from services.gateway.audit.log import AuditLog
from shared.context import new_request_id
from shared.jobs import Sweep


class AccessSweeps:
    def __init__(self, repo: AccessRepository, audit: AuditLog) -> None:
        self.repo = repo
        self.audit = audit

    def sweeps(self) -> list[Sweep]:
        return [Sweep("access-unanswered", lambda n: self._run(self.repo.expire_unanswered, n, "unanswered")),
                Sweep("access-grants-ended", lambda n: self._run(self.repo.end_grants, n, "grant ended"))]

    async def _run(self, sweep: Callable[[int, str], Awaitable[list[asyncpg.Record]]], limit: int,
                   why: str) -> int:
        trace = new_request_id()
        rows = await sweep(limit, trace)
        for row in rows:
            await self.audit.record(
                tenant_id=row["tenant_id"], identity_id=None, action=f"access request expired ({why})",
                resource=f"access-requests/{row['id']}", outcome="ok", status=200, client_ip=None,
                request_id=trace, notes={"policy": row["policy"], "requester": row["requester_id"]})
        return len(rows)
