"""Composition root of the ``secrets`` service: versioned, envelope-encrypted secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from services.secrets.domain import associated_data
from services.secrets.export_handlers import ExportHandlers
from services.secrets.export_store import ExportStore
from services.secrets.federation import Federation, backend_aad
from services.secrets.federation_handlers import FederationHandlers
from services.secrets.handlers import SecretsHandlers
from services.secrets.repository import SecretsRepository
from services.secrets.rotation_store import RotationStore
from services.secrets.settings import SecretsSettings
from shared.contracts import rpc_table
from shared.cursors import CursorCodec
from shared.db import SealedColumns, by_tenant_id, sealed_keys
from shared.durations import parse_duration
from shared.jobs import QueueRunner, Sweep, run_sweeps
from shared.runtime import Running, ServiceDeps, ServiceSpec


@asynccontextmanager
async def lifespan(deps: ServiceDeps) -> AsyncIterator[Running]:
    settings = deps.settings_of(SecretsSettings)
    repo = SecretsRepository(deps.pool, deps.kms, deps.schema)
    cursor_key = await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor")
    retention = parse_duration(settings.secret_retention, field="COFFER_SECRET_RETENTION")
    rotation = RotationStore(repo, retry_base=settings.rotation_retry_base)
    min_interval = parse_duration(settings.rotation_min_interval, field="COFFER_ROTATION_MIN_INTERVAL")
    cursors = CursorCodec(cursor_key)
    outbound = deps.outbound()
    federation = Federation(deps.pool, deps.kms, outbound, threshold=settings.federation_breaker_failures,
                            cooldown=settings.federation_breaker_cooldown)
    handlers = SecretsHandlers(repo, cursors, retention, rotation, min_interval, federation)
    # expiry events once per version, retention purges and due rotations once per secret, across replicas
    lifecycle = [Sweep("secret-expiry", repo.publish_expired), Sweep("secret-retention", repo.purge_due),
                 Sweep("secret-rotation", rotation.rotate_due)]
    exports = ExportStore(deps.pool, deps.kms, ttl_seconds=parse_duration(settings.export_ttl,
                                                                          field="COFFER_EXPORT_TTL"))
    export_jobs: QueueRunner[Any] = QueueRunner(exports, name="exports", concurrency=settings.export_concurrency,
                                                poll_interval=settings.export_poll_interval)
    lifecycle.append(Sweep("export-expiry", exports.delete_expired))
    deps.spawn(run_sweeps(lifecycle, settings.lifecycle_interval), "secrets-lifecycle")
    deps.spawn(export_jobs.run(), "secrets-exports")
    try:
        yield Running(rpc={**rpc_table(handlers), **rpc_table(ExportHandlers(exports, export_jobs)),
                           **rpc_table(FederationHandlers(federation, cursors))})
    finally:
        await federation.close()


SPEC = ServiceSpec(
    name="secrets", migrations=Path(__file__).parent / "migrations", lifespan=lifespan, settings=SecretsSettings,
    tenant_tables=("secret_versions", "secrets", "secret_policies", "rotation_policies", "exports",
                   "federation_backends"),
    # every version's data key (values are never re-encrypted)
    sealed=(SealedColumns("secret_versions", key=("tenant_id", "path", "version"),
                          aad=lambda row: associated_data(row["tenant_id"], row["path"], row["version"]),
                          tenant=by_tenant_id),
           # federation backends' credentials
           SealedColumns("federation_backends", key=("tenant_id", "name"),
                         aad=lambda row: backend_aad(row["tenant_id"], row["name"]),
                         tenant=by_tenant_id)),
)
