"""Loading a backup into an empty installation: all of it, or nothing.

A restore reads the backup twice. ``scan`` reads it whole first — age authenticates every chunk, the
manifest is checked against the target and this version, the keyring files are kept — and writes
nothing. ``load`` then reads it again into the database. Everything the database gets — the schemas,
the migrations the backup's schemas had, every table's rows (``COPY … FROM STDIN``, parents before
children), the sequences — happens in ONE transaction, committed only after age has authenticated the
whole stream (again): a wrong identity, a changed or a cut backup leaves the target exactly as it was.
The migrations this version has beyond the backup's run in it too, as at any start. ``write_files`` then
writes the keyring files (0600, never over a file), the KEKs of tenants deleted since the backup
destroyed before they reach their place.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from services.admin import catalog, shredding
from services.admin.backup import MAX_KEY_FILE, keyring_files, root_keyring
from services.admin.bundle import BackupRefused, Reader
from services.admin.manifest import Manifest
from services.admin.unseal import RootKey
from services.platform import spec_of
from shared.config import Settings
from shared.crypto import LocalKms
from shared.db import migrate
from shared.db.migrations import versions
from shared.registry import SERVICES


@dataclass
class Loaded:
    manifest: Manifest
    #: role ("root" or a service) → the file's bytes, checked against the manifest's digest
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


def _key_files(settings: Settings) -> list[Path]:
    """Key files of an installation at the target's paths: any of them makes it not empty."""
    found = [p for p in (settings.key_file, settings.sealed_keyring_file) if p.exists()]
    directory = settings.keyrings(root_keyring(settings))
    if directory.is_dir():
        found += sorted(directory.glob("*.keyring"))
    return found


async def refusals(conn: Any, settings: Settings) -> list[str]:
    """What makes the target not empty (each a line for the operator); none: a restore may go on."""
    found = [f"{path} exists" for path in _key_files(settings)]
    for table in await catalog.tables(conn, settings):
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table.sql})"):
            found.append(f"table {table.schema}.{table.name} has rows")
    return found


def _check(manifest: Manifest, settings: Settings) -> None:
    """The backup fits this target and this version of Coffer, or a refusal saying what to change."""
    if manifest.schema_prefix != settings.schema_prefix:
        raise BackupRefused(f"the backup's schemas have the prefix '{manifest.schema_prefix}' and the target's "
                            f"'{settings.schema_prefix}': set COFFER_SCHEMA_PREFIX={manifest.schema_prefix} "
                            "(sealed values are bound to their schema's name)")
    if manifest.seal != settings.seal:
        raise BackupRefused(f"the backup's keyring is under the {manifest.seal} seal and the target's COFFER_SEAL "
                            f"is {settings.seal}: set COFFER_SEAL={manifest.seal} (and what that seal needs)")
    for service, done in manifest.migrations.items():
        unknown = sorted(set(done) - set(versions(spec_of(service).migrations)))
        if unknown:
            raise BackupRefused(f"the backup is of a newer Coffer: the {service} schema had migrations this "
                                f"version doesn't have ({', '.join(unknown[:3])}): restore with that version")
    if "root" not in manifest.files:
        raise BackupRefused("the backup holds no root keyring: not a backup this wrote")


async def read_manifest(reader: Reader) -> Manifest:
    """The backup's first record, checked as data (the stream's first chunks authenticate it)."""
    await reader.start()
    first = await reader.record()
    if first.get("kind") != "manifest":
        raise BackupRefused("the backup does not begin with its manifest: not a backup this wrote")
    try:
        return Manifest.model_validate(first.get("manifest"))
    except pydantic.ValidationError as exc:
        raise BackupRefused(f"the backup's manifest is not one this version reads ({exc.error_count()} "
                            "problems)") from None


async def scan(path: Path, identities: list[Any], settings: Settings) -> Loaded:
    """The first pass: the whole backup read and authenticated (tables skipped), its manifest checked against
    this target and this version, its keyring files kept. Nothing is written."""
    reader = Reader(path, identities)
    try:
        manifest = await read_manifest(reader)
        _check(manifest, settings)
        loaded = Loaded(manifest)
        while (record := await reader.record())["kind"] != "end":
            if record["kind"] == "file":
                await _file(record, reader, loaded)
            elif record["kind"] == "table" and record.get("table") in manifest.tables:
                await reader.skip()
            elif record["kind"] != "sequences":
                raise BackupRefused(f"the backup holds a record this version doesn't know ({str(record)[:60]})")
        await reader.finish()
    finally:
        reader.close()
    missing = sorted(set(manifest.files) - set(loaded.files))
    if missing:
        raise BackupRefused(f"the backup lacks the keyring files its manifest names ({', '.join(missing)})")
    return loaded


async def load(conn: Any, settings: Settings, path: Path, identities: list[Any], scanned: Loaded,
               say: Callable[[str], None]) -> int:
    """The second pass: the database loaded from the backup ``scan`` read, in one transaction committed only
    once all of it authenticated again; how many sequences were set."""
    reader = Reader(path, identities)
    sequences = 0
    try:
        manifest = await read_manifest(reader)
        if manifest != scanned.manifest:
            raise BackupRefused(f"{path} changed while it was restored: nothing was restored")
        async with conn.transaction():
            for service in SERVICES:
                if service in manifest.migrations:
                    await migrate(conn, settings.schema_for(service), spec_of(service).migrations,
                                  only=set(manifest.migrations[service]))
            ordered = await catalog.tables(conn, settings)
            for table in reversed(ordered):  # rows a migration seeded (a counter's first row): the backup's instead
                await conn.execute(f"DELETE FROM {table.sql}")
            tables = {t.key: t for t in ordered}
            again = Loaded(manifest)
            while (record := await reader.record())["kind"] != "end":
                kind = record["kind"]
                if kind == "file":
                    await _file(record, reader, again)  # the same bytes as the first pass's (the digest)
                elif kind == "table":
                    await _table(conn, record, reader, tables, manifest, say)
                elif kind == "sequences":
                    sequences = await _sequences(conn, record, settings)
                else:
                    raise BackupRefused(f"the backup holds a record this version doesn't know ({kind[:40]!r})")
            await reader.finish()  # the whole stream authenticated: only now may anything stay
            for service in SERVICES:  # what this version has beyond the backup's migrations, as at any start
                if service in manifest.migrations:
                    await migrate(conn, settings.schema_for(service), spec_of(service).migrations)
    finally:
        reader.close()
    return sequences


async def _file(record: dict[str, Any], reader: Reader, loaded: Loaded) -> None:
    role = record.get("role")
    ref = loaded.manifest.files.get(role) if isinstance(role, str) else None  # type: ignore[call-overload]
    if ref is None or record.get("name") != ref.name or role in loaded.files:
        raise BackupRefused("the backup holds a file its manifest doesn't name: not a backup this wrote")
    data = await reader.data(MAX_KEY_FILE)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BackupRefused(f"the backup's {role} keyring file is not the one its manifest names")
    loaded.files[str(role)] = data


async def _table(conn: Any, record: dict[str, Any], reader: Reader, tables: dict[str, catalog.Table],
                 manifest: Manifest, say: Callable[[str], None]) -> None:
    key, columns = record.get("table"), record.get("columns")
    table = tables.get(key) if isinstance(key, str) else None
    if table is None or key not in manifest.tables:
        raise BackupRefused(f"the backup holds a table the target's schemas don't have ({str(key)[:80]!r})")
    if not isinstance(columns, list) or not columns or not set(columns) <= set(table.columns) \
            or len(set(columns)) != len(columns):
        raise BackupRefused(f"the backup's columns of {key} are not the target's")
    await conn.copy_to_table(table.name, schema_name=table.schema, columns=columns, source=reader.chunks(),
                             format="text")
    rows = manifest.tables[key].rows
    if rows:
        say(f"restore: {key}: {catalog.rows(rows)}")


async def _sequences(conn: Any, record: dict[str, Any], settings: Settings) -> int:
    """Each sequence set where the backup left it: a bigserial goes on after the restore, never repeats."""
    values = record.get("sequences")
    if not isinstance(values, dict):
        raise BackupRefused("the backup's sequences are not a mapping")
    names = catalog.schemas(settings)
    done = 0
    for key, value in values.items():
        service, _, name = str(key).partition(".")
        if service not in names or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or not isinstance(value, dict) \
                or not isinstance(value.get("last_value"), int) or not isinstance(value.get("is_called"), bool):
            raise BackupRefused(f"the backup's sequence {str(key)[:80]!r} is malformed")
        sequence = catalog.quote(names[service], name)
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", sequence):
            raise BackupRefused(f"the backup names a sequence the target doesn't have ({key})")
        await conn.execute("SELECT setval($1::regclass, $2, $3)", sequence, value["last_value"], value["is_called"])
        done += 1
    return done


def write_files(settings: Settings, loaded: Loaded, salts: dict[str, bytes], root: RootKey,
                deleted: Iterable[str]) -> tuple[list[Path], int]:
    """The keyring files at the target's paths (0600, never over one), with the KEKs of the ``deleted``
    tenants destroyed before a service keyring reaches its place (they are made in a directory beside it
    first); the paths written, and how many of those tenants held keys."""
    targets = {"root": root_keyring(settings), **keyring_files(settings, salts)}
    for role in loaded.files:
        if role not in targets:
            raise BackupRefused(f"the backup holds a keyring of the {role} service, whose schema has no salt")
        if role != "root" and loaded.manifest.files[role].name != targets[role].name:  # type: ignore[index]
            raise BackupRefused(f"the {role} keyring's name does not fit its restored salt: not a backup this wrote")
    _place(targets["root"], loaded.files["root"])
    kms = root.open(targets["root"])
    directory = settings.keyrings(targets["root"])
    staging = directory / f".restoring-{secrets.token_hex(4)}"
    staging.mkdir(parents=True, mode=0o700)
    try:
        for role, data in loaded.files.items():
            if role != "root":
                _place(staging / targets[role].name, data)
        had = shredding.shred(kms, staging, {s: salts[s] for s in loaded.files if s != "root"}, deleted)
        written = [targets["root"]]
        for role in loaded.files:
            if role != "root":
                _place(targets[role], (staging / targets[role].name).read_bytes())
                written.append(targets[role])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written, had


def _place(path: Path, data: bytes) -> None:
    if path.exists():
        raise BackupRefused(f"{path} appeared while restoring: the target is not empty any more")
    LocalKms._write(path, data, replace=False)
    if path.read_bytes() != data:
        raise BackupRefused(f"{path} was made by someone else while restoring")
