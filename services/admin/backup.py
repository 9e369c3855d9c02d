"""``python -m services.admin backup``: one consistent snapshot of every Coffer schema, and the keys it needs.

How it is consistent: one connection, one ``REPEATABLE READ READ ONLY`` transaction; every table of every
schema is read with ``COPY … TO STDOUT`` inside it, so the backup is the database at one instant while
writes go on (they wait for nothing: a read-only snapshot takes no lock a writer needs).

Why COPY through asyncpg and not ``pg_dump``: ``pg_dump`` refuses a server newer than itself, and the two
run modes meet two majors here (the embedded mode's ``pgserver`` is PostgreSQL 16, Debian's client is 15);
asyncpg speaks to any of them, needs no client binary, and the tables' shapes come from Coffer's own
migrations, which a restore replays (the backup records which ones each schema had).

What the seal needs: the root keyring file (``kms.key``, or ``keyring.sealed`` — which opens nothing
without the shares, the KMS or the HSM, none of which a backup holds) and each service's keyring file
(tenants' KEKs: shared/keyring.py). They are read after the snapshot is fixed: a key made after it is in
the file too (harmless), and no value of the snapshot is under a key the file doesn't have yet.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.admin import catalog
from services.admin.bundle import BackupRefused, Writer
from services.admin.manifest import Manifest
from shared.config import Settings
from shared.keyring import keyring_id

FORMAT = 1
#: the largest keyring file a backup takes (and a restore accepts): far above any real one
MAX_KEY_FILE = 64 << 20


def root_keyring(settings: Settings) -> Path:
    """The root keyring file of this installation's seal."""
    return settings.key_file if settings.seal == "file" else settings.sealed_keyring_file


def keyring_files(settings: Settings, salts: dict[str, bytes]) -> dict[str, Path]:
    """service → its keyring file (named by its salt: shared/keyring.py)."""
    directory = settings.keyrings(root_keyring(settings))
    return {service: directory / f"{service}.{keyring_id(salt)}.keyring" for service, salt in salts.items()}


def _read(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupRefused(f"{what} {path} is missing: without it nothing in the backup could be opened") from None
    except OSError as exc:
        raise BackupRefused(f"{what} {path} can't be read ({type(exc).__name__})") from None
    if not data or len(data) > MAX_KEY_FILE:
        raise BackupRefused(f"{what} {path} is empty or far too large to be one")
    return data


async def backup(settings: Settings, dsn: str, out: Path, recipients: list[Any],
                 say: Callable[[str], None] = print) -> Manifest:
    """Write the backup to ``out`` (0600; refused if it exists); its manifest."""
    out = Path(out)
    if out.exists():
        raise BackupRefused(f"{out} exists already: choose another name (nothing is overwritten)")
    began = time.monotonic()
    conn = await asyncpg.connect(dsn)
    writer: Writer | None = None
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            taken = await conn.fetchval("SELECT now()")  # the first statement fixes the snapshot
            say(f"backup: snapshot taken at {taken.astimezone(UTC).isoformat()} "
                "(one REPEATABLE READ, read-only transaction over every schema)")
            salts = await catalog.salts(conn, settings)
            who = await catalog.installation(conn, settings)
            if not salts or who["root_tenant"] is None:
                raise BackupRefused(f"no initialised Coffer in the schemas of prefix '{settings.schema_prefix}' "
                                    "(COFFER_SCHEMA_PREFIX): nothing to back up")
            root_path = root_keyring(settings)
            files = {"root": (root_path.name, _read(root_path, "the root keyring"))}
            for service, path in keyring_files(settings, salts).items():
                files[service] = (path.name, _read(path, f"the {service} service's keyring"))
            found = await catalog.tables(conn, settings)
            manifest = Manifest.model_validate({
                "format": FORMAT, "created_at": datetime.now(UTC).isoformat(),
                "snapshot_at": taken.astimezone(UTC).isoformat(),
                "schema_prefix": settings.schema_prefix, "seal": settings.seal,
                "root_tenant": who["root_tenant"], "tenants": who["tenants"],
                "migrations": await catalog.migrations(conn, settings),
                "tables": await catalog.counts(conn, found),
                "audit_heads": await catalog.audit_heads(conn, settings),
                "files": {k: {"name": name, "sha256": hashlib.sha256(data).hexdigest()}
                          for k, (name, data) in files.items()},
            })  # what a restore will accept, checked before anything is written
            writer = Writer(out, recipients)
            await writer.record("manifest", manifest=manifest.model_dump(mode="json"))
            for role, (name, data) in files.items():
                await writer.stream("file", data=data, role=role, name=name)
            say(f"backup: the seal's files: {root_path.name} ({settings.seal} seal) and "
                f"{len(files) - 1} service keyrings")
            for table in found:
                await writer.record("table", stream=True, table=table.key, columns=list(table.columns))
                await conn.copy_from_table(table.name, schema_name=table.schema, columns=list(table.columns),
                                           output=_chunks_to(writer), format="text")
                await writer.chunk(b"")
                rows = manifest.tables[table.key].rows
                if rows:
                    say(f"backup: {table.key}: {catalog.rows(rows)}")
            await writer.record("sequences", sequences=await catalog.sequences(conn, settings))
        size = await writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        await conn.close()
    say(f"backup: wrote {out} ({size / 1e6:.1f} MB, age-encrypted to {len(recipients)} recipient"
        f"{'s' if len(recipients) != 1 else ''}): {len(manifest.tenants)} tenants, {len(found)} tables, "
        f"{manifest.rows()} rows, audit chains of {len(manifest.audit_heads)} tenants, "
        f"in {time.monotonic() - began:.1f}s")
    return manifest


def _chunks_to(writer: Writer) -> Callable[[bytes], Any]:
    async def output(data: bytes) -> None:
        if data:  # an empty chunk would end the table's stream
            await writer.chunk(bytes(data))
    return output
