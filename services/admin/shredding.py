"""Tenants deleted after a backup stay unreadable after its restore (crypto-shredding, issue #29 / #35).

A backup holds the keyring files as they were: a tenant alive then has its KEKs in them. Deleting it
later destroys its KEKs in the live installation's keyrings only — no file can reach back into a backup
already written. So a restore is told what happened since, and destroys those tenants' KEKs in the
restored keyrings (the same tombstone ``DELETE /v1/tenants/{id}`` leaves: no key is ever made for them
again) before anything starts on them:

* ``--deleted-since SOURCE``: a tenant of the backup that SOURCE no longer has was deleted after it.
  SOURCE is the installation being replaced — its database (``postgresql://…``) or an embedded
  installation's data directory — or a newer backup of it. SOURCE must be the same installation (the same
  root tenant) and later than the backup (its root audit chain holds the backup's head; a backup's
  snapshot is later), or the restore is refused: an older or a foreign SOURCE would destroy live tenants.
* ``--forget-tenant ID``: a tenant the operator knows was deleted (e.g. from the audit log).

What does not hold: with neither (the installation lost, no later backup), a backup opens every tenant
alive when it was taken, as it opens every other write made before it. docs/operations.md, "Backups".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg

from services.admin import catalog
from services.admin.bundle import BackupRefused, Reader
from services.admin.manifest import Manifest
from shared.config import Settings
from shared.crypto import LocalKms
from shared.handover import root_share
from shared.keyring import ServiceKeyring


async def _from_database(dsn: str, manifest: Manifest) -> set[str]:
    settings = Settings(schema_prefix=manifest.schema_prefix)
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BackupRefused(f"--deleted-since: the database can't be reached ({type(exc).__name__})") from None
    try:
        who = await catalog.installation(conn, settings)
        if who["root_tenant"] != manifest.root_tenant:
            raise BackupRefused("--deleted-since: that database is another installation (another root tenant): "
                                "its tenants say nothing about this backup's")
        head = manifest.audit_heads.get(manifest.root_tenant)
        log = catalog.quote(settings.schema_for("gateway"), "audit_log")
        if head is not None and not await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {log} WHERE tenant_id = $1 AND hash = $2)",
                manifest.root_tenant, bytes.fromhex(head.hash)):
            raise BackupRefused("--deleted-since: that database's history does not go through this backup "
                                "(its root audit chain lacks the backup's head): an older copy, or a fork")
        return set(who["tenants"])
    finally:
        await conn.close()


async def _from_backup(path: Path, identities: list[Any], manifest: Manifest) -> set[str]:
    reader = Reader(path, identities)
    try:
        await reader.start()
        first = await reader.record()
        newer = Manifest.model_validate(first.get("manifest"))
    except (BackupRefused, ValueError) as exc:
        raise BackupRefused(f"--deleted-since {path}: {exc}") from None
    finally:
        reader.close()
    if newer.root_tenant != manifest.root_tenant:
        raise BackupRefused(f"--deleted-since {path}: a backup of another installation (another root tenant)")
    if newer.snapshot_at <= manifest.snapshot_at:
        raise BackupRefused(f"--deleted-since {path}: a backup taken before (or with) the one restored: "
                            "it can't know what was deleted after")
    return set(newer.tenants)


def kind_of(source: str) -> str:
    """What a ``--deleted-since`` source is: ``database``, ``directory`` or ``backup``."""
    if source.startswith(("postgresql://", "postgres://")):
        return "database"
    if os.path.isdir(source):
        return "directory"
    if os.path.isfile(source):
        return "backup"
    # never the source itself: a URL of another scheme (postgresql+asyncpg://user:password@…) holds a password
    raise BackupRefused("--deleted-since: a source is not a postgresql:// URL, a data directory or a backup")


async def deleted_since(sources: Iterable[str], manifest: Manifest, identities: list[Any],
                        database_of: Callable[[Path], str]) -> dict[str, str]:
    """tenant id → the source that says it was deleted after the backup."""
    found: dict[str, str] = {}
    for source in sources:
        kind = kind_of(source)
        if kind == "database":
            alive = await _from_database(source, manifest)
            label = "the replaced installation's database"
        elif kind == "directory":
            alive = await _from_database(database_of(Path(source)), manifest)
            label = f"the installation in {source}"
        else:
            alive = await _from_backup(Path(source), identities, manifest)
            label = f"the later backup {Path(source).name}"
        for tenant in set(manifest.tenants) - alive:
            found.setdefault(tenant, label)
    return found


def shred(kms: LocalKms, directory: Path, salts: dict[str, bytes], tenants: Iterable[str]) -> int:
    """Each tenant's KEKs destroyed in every service keyring in ``directory`` (a tombstone each, as a tenant's
    deletion leaves); how many of the keyrings held some."""
    had = 0
    tenants = sorted(set(tenants))
    for service, salt in salts.items():
        ring = ServiceKeyring.open(directory, service, root_share(kms, service), salt)
        for tenant in tenants:
            had += ring.shred(tenant)
    return had
