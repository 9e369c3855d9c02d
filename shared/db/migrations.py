"""Ordered SQL migrations per service schema, applied at start-up.

The shared migrations (outbox, inbox) run first in every schema, then the
service's own files in name order. All of it happens under one
``pg_advisory_lock`` so replicas starting together don't race; each file runs
in its own transaction and is recorded in ``<schema>.schema_migrations``.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import asyncpg
import structlog

log = structlog.get_logger("coffer.db.migrations")

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x0C0FFE2  # one key for every schema: migrations are rare and short


def _files(directory: Path | None, namespace: str) -> list[tuple[str, Path]]:
    if directory is None or not directory.is_dir():
        return []
    return [(f"{namespace}/{p.name}", p) for p in sorted(directory.glob("*.sql"))]


def versions(service_dir: Path | None) -> list[str]:
    """Every migration a schema of this service gets, in the order they apply."""
    return [version for version, _ in _files(SHARED_MIGRATIONS, "shared") + _files(service_dir, "service")]


async def migrate(conn: asyncpg.Connection, schema: str, service_dir: Path | None, *,
                  only: Collection[str] | None = None) -> list[str]:
    """Bring ``schema`` up to date (or, with ``only``, apply those of its migrations alone: a restore first
    makes the tables its backup had); returns the migrations applied now."""
    files = _files(SHARED_MIGRATIONS, "shared") + _files(service_dir, "service")
    if only is not None:
        files = [(version, path) for version, path in files if version in only]
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        # Look first: with per-service roles the schema is made by the operator (owned by the
        # service's role, which may not create schemas), and CREATE SCHEMA IF NOT EXISTS checks
        # the privilege before it checks whether the schema exists.
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]
            for r in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
        }
        for version, path in files:
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                await conn.execute(path.read_text())  # noqa: ASYNC240 - tiny files, at start-up
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (version) VALUES ($1)', version
                )
            applied_now.append(version)
            log.info("migration_applied", schema=schema, version=version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
