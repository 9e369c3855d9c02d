"""Exports' SQL and their job (api.md §5.3): a leased queue on the shared job runner.

An export row holds the paths to put in (decided by the gateway from the
caller's policies), the progress (``done`` of ``count``) and, once ready, the
age ciphertext: the plaintext lives only in this process's memory while the
job builds and encrypts it. A replica claims a pending export with a lease
(``SKIP LOCKED``); one that dies mid-way leaves it to another when the lease
ends, up to ``MAX_ATTEMPTS``. Rows are deleted ``ttl`` after their creation,
bundle and all.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from services.secrets.domain import associated_data, value_of
from services.secrets.exports import MAX_BUNDLE_BYTES, encrypt, render
from shared.contracts.exports import ExportView
from shared.crypto import Sealed, unseal
from shared.errors import CofferError, ExportNotFound, ValidationError
from shared.keyring import ServiceKeyring

log = structlog.get_logger("coffer.secrets.exports")

_VIEW = "id, status, prefix, format, count, done, error, created_by, created_at, expires_at"
#: paths read and unsealed per step (the progress figure moves once a step)
STEP = 200
#: claims of one export before it is given up as failed (a worker died each time)
MAX_ATTEMPTS = 3
#: how long a claim lasts without progress; each step renews it
LEASE_SECONDS = 60.0


def _not_found(export_id: str) -> ExportNotFound:
    return ExportNotFound(f"export '{export_id[:64]}' not found", details={"id": export_id[:64]})


class ExportStore:
    """Export rows, and the ``LeasedQueue`` the job runner works through."""

    def __init__(self, pool: asyncpg.Pool, kms: ServiceKeyring, *, ttl_seconds: int) -> None:
        self.pool = pool
        self.kms = kms
        self.ttl = ttl_seconds

    async def create(self, tenant_id: str, identity_id: str | None, prefix: str, fmt: str, recipient: str,
                     paths: Sequence[str]) -> ExportView:
        row = await self.pool.fetchrow(
            "INSERT INTO exports (tenant_id, id, prefix, format, recipient, paths, count, created_by, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))"
            f" RETURNING {_VIEW}", tenant_id, "exp_" + secrets.token_hex(12), prefix, fmt, recipient, list(paths),
            len(paths), identity_id, float(self.ttl))
        return ExportView.model_validate(dict(row))

    async def get(self, tenant_id: str, export_id: str) -> ExportView:
        row = await self.pool.fetchrow(
            f"SELECT {_VIEW} FROM exports WHERE tenant_id = $1 AND id = $2 AND expires_at > now()",
            tenant_id, export_id)
        if row is None:
            raise _not_found(export_id)
        return ExportView.model_validate(dict(row))

    async def bundle(self, tenant_id: str, export_id: str) -> bytes:
        row = await self.pool.fetchrow(
            "SELECT status, bundle FROM exports WHERE tenant_id = $1 AND id = $2 AND expires_at > now()",
            tenant_id, export_id)
        if row is None:
            raise _not_found(export_id)
        if row["status"] != "ready":
            raise ExportNotFound(f"export '{export_id}' has no bundle: it is {row['status']}",
                                 details={"id": export_id, "status": row["status"]})
        return bytes(row["bundle"])

    async def delete_expired(self, batch: int = 100) -> int:
        """The lifecycle sweep: exports (and their bundles) past ``expires_at``."""
        return len(await self.pool.fetch(
            "DELETE FROM exports WHERE id IN (SELECT id FROM exports WHERE expires_at <= now()"
            " ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING 1", batch))

    # -- the job (shared.jobs.LeasedQueue) ---------------------------------------------------------

    async def claim(self, free: int) -> Sequence[asyncpg.Record]:
        return list(await self.pool.fetch(
            "UPDATE exports SET lease_until = now() + make_interval(secs => $2), attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM exports WHERE status = 'pending' AND expires_at > now()"
            " AND (lease_until IS NULL OR lease_until < now()) ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING tenant_id, id, prefix, format, recipient, paths, attempts", free, LEASE_SECONDS))

    async def work(self, item: asyncpg.Record) -> None:
        export_id = item["id"]
        if item["attempts"] > MAX_ATTEMPTS:
            await self._finish(export_id, "failed", error="internal_error")
            return
        try:
            included, plaintext = await self._collect(item)
            # encrypting a large bundle is CPU work: off the event loop every request shares
            bundle = await asyncio.to_thread(encrypt, plaintext, item["recipient"])
            del plaintext
        except CofferError as exc:
            log.warning("export_failed", export_id=export_id, error=exc.code)
            await self._finish(export_id, "failed", error=exc.code)
            return
        await self._finish(export_id, "ready", bundle=bundle, count=included)
        log.info("export_ready", export_id=export_id, count=included, bytes=len(bundle))

    async def _collect(self, item: asyncpg.Record) -> tuple[int, bytes]:
        """The live, unexpired values at the export's paths, rendered in its format (in memory only)."""
        tenant_id, paths = item["tenant_id"], list(item["paths"])
        values: list[tuple[str, Any]] = []
        size = 0
        for start in range(0, len(paths), STEP):
            rows = await self.pool.fetch(
                "SELECT s.path, v.version, v.kek_id, v.wrapped_key, v.nonce, v.ciphertext FROM secrets s"
                " JOIN secret_versions v ON v.tenant_id = s.tenant_id AND v.path = s.path"
                " AND v.version = s.current_version WHERE s.tenant_id = $1 AND s.path = ANY($2::text[])"
                " AND s.deleted_at IS NULL AND v.deleted_at IS NULL AND v.destroyed_at IS NULL"
                " AND (v.expires_at IS NULL OR v.expires_at > now()) ORDER BY s.path",
                tenant_id, paths[start:start + STEP])
            for row in rows:
                sealed = Sealed(row["kek_id"], row["wrapped_key"], row["nonce"], row["ciphertext"])
                plaintext = unseal(self.kms.tenant(tenant_id), sealed,
                                   associated_data(tenant_id, row["path"], row["version"]))
                size += len(plaintext)
                if size > MAX_BUNDLE_BYTES:
                    raise ValidationError.on("prefix", f"the secrets under this prefix are more than "
                                                       f"{MAX_BUNDLE_BYTES} bytes: narrow the prefix")
                values.append((row["path"], value_of(plaintext)))
            await self.pool.execute(
                "UPDATE exports SET done = $2, lease_until = now() + make_interval(secs => $3) WHERE id = $1",
                item["id"], min(start + STEP, len(paths)), LEASE_SECONDS)
        values.sort(key=lambda pair: pair[0])
        return len(values), render(item["format"], item["prefix"], values)

    async def _finish(self, export_id: str, status: str, *, bundle: bytes | None = None, count: int | None = None,
                      error: str | None = None) -> None:
        await self.pool.execute(
            "UPDATE exports SET status = $2, bundle = $3, count = coalesce($4, count), done = coalesce($4, done),"
            " error = $5, paths = '{}', lease_until = NULL, finished_at = $6 WHERE id = $1",
            export_id, status, bundle, count, error, datetime.now(UTC))
