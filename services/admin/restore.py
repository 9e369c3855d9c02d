"""``python -m services.admin restore``: a backup into an EMPTY installation, then checked.

In order: the target must be empty (no keyring file at its paths, no row in its schemas) or nothing
happens; the manifest is read and every ``--deleted-since`` source asked (a bad source fails before the
target is touched); the database is loaded in one transaction (services/admin/load.py); the keyring files
are written; the seal is opened as an operator's tool opens it (the key file; the KMS or HSM; shamir shares
on standard input); tenants deleted after the backup lose their keys (services/admin/shredding.py); then
the checks of services/admin/verify.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg

from services.admin import catalog, load, shredding, verify
from services.admin.bundle import BackupRefused, Reader
from shared.config import Settings
from shared.custody import open_for_tool


async def restore(settings: Settings, dsn: str, path: Path, identities: list[Any], *,
                  deleted_since: Iterable[str] = (), forget: Iterable[str] = (), sample: int = 20,
                  stdin: Any = None, say: Callable[[str], None] = print,
                  database_of: Callable[[Path], str] = shredding.embedded_dsn) -> verify.Verdict:
    """Restore ``path`` into the installation ``settings`` and ``dsn`` name; the verdict of the checks."""
    began = time.monotonic()
    reader = Reader(path, identities)
    try:
        conn = await asyncpg.connect(dsn)
        try:
            refusals = await load.refusals(conn, settings)
            if refusals:
                raise BackupRefused("the target installation is not empty (" + "; ".join(refusals[:4])
                                    + (f"; {len(refusals) - 4} more" if len(refusals) > 4 else "")
                                    + "): restore needs a fresh database and an empty data directory — "
                                    "nothing was changed")
            manifest = await load.read_manifest(reader)
            say(f"restore: backup of {manifest.snapshot_at} ({len(manifest.tenants)} tenants, {manifest.rows()} "
                f"rows, {manifest.seal} seal), schema prefix '{manifest.schema_prefix}'")
            deleted = await shredding.deleted_since(deleted_since, manifest, identities, database_of)
            for tenant in forget:
                deleted.setdefault(tenant, "--forget-tenant")
            loaded = await load.load(conn, settings, reader, manifest, say)
            say(f"restore: database loaded and committed ({manifest.rows()} rows, {loaded.sequences} sequences "
                "set where the backup left them)")
            salts = await catalog.salts(conn, settings)
        finally:
            await conn.close()
    finally:
        reader.close()
    written = load.write_files(settings, loaded, salts)
    say(f"restore: keyring files written: {', '.join(p.name for p in written)} (0600)")
    kms = await open_for_tool(settings, stdin)
    if deleted:
        had = shredding.shred(kms, settings, salts, deleted)
        for tenant, why in sorted(deleted.items()):
            known = "" if tenant in manifest.tenants else " (not a tenant of this backup)"
            say(f"restore: tenant {tenant} was deleted after the backup ({why}): its keys destroyed{known}")
        say(f"restore: {len(deleted)} tenants' keys destroyed in {len(salts)} service keyrings ({had} held some)")
    verdict = verify.Verdict()
    conn = await asyncpg.connect(dsn)
    try:
        await verify.counts(conn, settings, manifest, verdict)
    finally:
        await conn.close()
    say(f"verify: counts of {len(manifest.tables)} tables" + (" match the manifest" if verdict.ok else
                                                               ": DIFFER"))
    checked = await verify.audit(dsn, settings, manifest, verdict)
    say(f"verify: audit chains of {len(manifest.audit_heads)} tenants ({checked} entries) "
        + ("verify and end at the manifest's heads" if verdict.ok else "checked: see the problems below"))
    await verify.secrets_sample(dsn, settings, kms, sample, set(deleted), verdict, say)
    say(f"verify: {verdict.read} sampled secrets read back through the restored secrets service"
        + (f"; {verdict.refused} of the deleted tenants' stayed unreadable (encryption_error)" if deleted else ""))
    for problem in verdict.problems:
        say(f"verify: PROBLEM: {problem}")
    say(f"restore: {'done' if verdict.ok else 'done, but the checks found problems'} in "
        f"{time.monotonic() - began:.1f}s")
    return verdict
