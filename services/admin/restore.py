"""``python -m services.admin restore``: a backup into an EMPTY installation, then checked.

In order, nothing written until the fourth step: the target must be empty (no keyring file at its paths,
no row in its schemas); the backup is read whole and authenticated (services/admin/load.py ``scan``); its
root keyring is opened with the target's seal (services/admin/unseal.py: shamir shares on standard input,
the KMS or HSM); every ``--deleted-since`` source is asked. Then the database is loaded in one
transaction; the keyring files are written, the keys of tenants deleted since the backup destroyed first
(services/admin/shredding.py); and the checks of services/admin/verify.py run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg

from services.admin import catalog, load, shredding, verify
from services.admin.bundle import BackupRefused
from services.admin.embedded import embedded_dsn
from services.admin.unseal import unseal
from shared.config import Settings


async def restore(settings: Settings, dsn: str, path: Path, identities: list[Any], *,
                  deleted_since: Iterable[str] = (), forget: Iterable[str] = (), sample: int = 20,
                  stdin: Any = None, say: Callable[[str], None] = print,
                  database_of: Callable[[Path], str] = embedded_dsn) -> verify.Verdict:
    """Restore ``path`` into the installation ``settings`` and ``dsn`` name; the verdict of the checks."""
    began = time.monotonic()
    conn = await asyncpg.connect(dsn)
    try:
        await _empty(conn, settings)
        scanned = await load.scan(path, identities, settings)  # the whole backup authenticated, nothing written
        manifest = scanned.manifest
        say(f"restore: {path.name} opens and authenticates whole: a backup of {manifest.snapshot_at} "
            f"({len(manifest.tenants)} tenants, {manifest.rows()} rows, {manifest.seal} seal, schema prefix "
            f"'{manifest.schema_prefix}')")
        root = await unseal(settings, scanned.files["root"], stdin)
        say(f"restore: the {manifest.seal} seal opens the backup's root keyring")
        deleted = await shredding.deleted_since(deleted_since, manifest, identities, database_of)
        for tenant in forget:
            deleted.setdefault(tenant, "--forget-tenant")
        await _empty(conn, settings)  # still
        sequences = await load.load(conn, settings, path, identities, scanned, say)
        say(f"restore: database loaded and committed ({manifest.rows()} rows, {sequences} sequences set where "
            "the backup left them)")
        salts = await catalog.salts(conn, settings)
    finally:
        await conn.close()
    written, had = load.write_files(settings, scanned, salts, root, deleted)
    say(f"restore: keyring files written: {', '.join(p.name for p in written)} (0600)")
    for tenant, why in sorted(deleted.items()):
        known = "" if tenant in manifest.tenants else " (not a tenant of this backup)"
        say(f"restore: tenant {tenant} was deleted after the backup ({why}): its keys destroyed{known}")
    if deleted:
        say(f"restore: {len(deleted)} tenants' keys destroyed in {len(salts)} service keyrings ({had} held some) "
            "before they were put in place")
    kms = root.open(written[0])
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


async def _empty(conn: Any, settings: Settings) -> None:
    refusals = await load.refusals(conn, settings)
    if refusals:
        raise BackupRefused("the target installation is not empty (" + "; ".join(refusals[:4])
                            + (f"; {len(refusals) - 4} more" if len(refusals) > 4 else "")
                            + "): restore needs a fresh database and an empty data directory — nothing was changed")
