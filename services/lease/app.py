"""Composition root of the ``lease`` service: engines, roles, credentials, leases, and the sweeper.

The sweeper is a leased queue on the shared job runner: every replica runs
it, ``SKIP LOCKED`` gives each expired lease to one of them. A deleted
tenant's leases are revoked in their targets (not merely forgotten): its
engines stay, hidden, until the last of their users is gone, then go.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog

from services.lease.engines.base import Reach
from services.lease.handlers import LeaseHandlers
from services.lease.leases import Engines, Leases, engine_aad
from services.lease.repository import LeaseRepository
from services.lease.settings import LeaseSettings
from shared.context import RequestContext
from shared.contracts import rpc_table
from shared.contracts.events import Event
from shared.cursors import CursorCodec
from shared.db import SealedColumns, by_tenant_id, sealed_keys
from shared.jobs import QueueRunner, Sweep, run_sweeps
from shared.runtime import Running, ServiceDeps, ServiceSpec

log = structlog.get_logger("coffer.lease")


@asynccontextmanager
async def lifespan(deps: ServiceDeps) -> AsyncIterator[Running]:
    settings = deps.settings_of(LeaseSettings)
    repo = LeaseRepository(deps.pool, deps.schema)
    # engines reach only the ranges the operator names; plain http for management APIs on them
    policy = deps.outbound(settings.engine_allowed_cidrs, allow_http=True, public=False)
    engines = Engines(deps.kms, Reach(policy, settings.engine_timeout, settings.engine_connections,
                                      limits=settings.engine_limits()))
    leases = Leases(repo, engines)
    sweeper: QueueRunner[Any] = QueueRunner(leases, name="lease-revocations",
                                            concurrency=settings.lease_revoke_concurrency,
                                            poll_interval=settings.lease_sweep_interval)
    cursors = CursorCodec(await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor"))

    async def tenant_deleted(event: Event, ctx: RequestContext) -> None:
        tenant_id = event.data.get("tenant_id") or event.tenant_id
        if event.type == "tenant.deleted" and isinstance(tenant_id, str) and tenant_id:
            marked = await repo.tenant_deleted(tenant_id)
            log.info("tenant_leases_revoking", tenant_id=tenant_id, leases=marked)
            sweeper.wake()

    await deps.bus.subscribe("lease-tenants", ["tenant.deleted"], tenant_deleted)
    deps.spawn(sweeper.run(), "lease-sweeper")
    deps.spawn(run_sweeps([Sweep("lease-deleted-tenants", repo.purge_deleted_tenants)],
                          settings.lease_sweep_interval * 5), "lease-tenants")
    try:
        yield Running(rpc=rpc_table(LeaseHandlers(repo, leases, cursors, sweeper)))
    finally:
        await engines.close()


SPEC = ServiceSpec(
    name="lease", migrations=Path(__file__).parent / "migrations", lifespan=lifespan, settings=LeaseSettings,
    sealed=(SealedColumns("engines", key=("tenant_id", "name"), aad=lambda row: engine_aad(row["tenant_id"],
                                                                                           row["name"]),
                          tenant=by_tenant_id),),
    gauges={"coffer_lease_revocations_retrying": "SELECT count(*) FROM leases WHERE status = 'revoking'"
                                                 " AND attempts > 0"},
)
