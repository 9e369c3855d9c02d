"""Composition root of the ``secrets`` service: versioned, envelope-encrypted secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.secrets.domain import associated_data
from services.secrets.handlers import SecretsHandlers
from services.secrets.repository import SecretsRepository
from services.secrets.settings import SecretsSettings
from shared.contracts import rpc_table
from shared.cursors import CursorCodec
from shared.db import SealedColumns, sealed_keys
from shared.durations import parse_duration
from shared.jobs import Sweep, run_sweeps
from shared.runtime import Running, ServiceDeps, ServiceSpec


@asynccontextmanager
async def lifespan(deps: ServiceDeps) -> AsyncIterator[Running]:
    settings = deps.settings_of(SecretsSettings)
    repo = SecretsRepository(deps.pool, deps.kms, deps.schema)
    cursor_key = await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor")
    retention = parse_duration(settings.secret_retention, field="COFFER_SECRET_RETENTION")
    handlers = SecretsHandlers(repo, CursorCodec(cursor_key), retention)
    # expiry events once per version, retention purges once per secret, across replicas
    lifecycle = [Sweep("secret-expiry", repo.publish_expired), Sweep("secret-retention", repo.purge_due)]
    deps.spawn(run_sweeps(lifecycle, settings.lifecycle_interval), "secrets-lifecycle")
    yield Running(rpc=rpc_table(handlers))


SPEC = ServiceSpec(
    name="secrets", migrations=Path(__file__).parent / "migrations", lifespan=lifespan, settings=SecretsSettings,
    tenant_tables=("secret_versions", "secrets", "secret_policies"),
    # every version's data key (values are never re-encrypted)
    sealed=(SealedColumns("secret_versions", key=("tenant_id", "path", "version"),
                          aad=lambda row: associated_data(row["tenant_id"], row["path"], row["version"])),),
)
