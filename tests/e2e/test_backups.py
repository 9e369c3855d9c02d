"""Backups (issue #35 item 2): ``python -m services.admin backup | restore`` against real PostgreSQL.

One source platform for the module (embedded mode: the in-process bus) with a known set across every
service (tests/drill/known.py). The backup is taken while a client writes; each restore goes into a fresh
database and an empty data directory, and a platform started on it reads everything back through its
gateway. The command line runs in process (``services.admin.cli.run``) so its output can be held to
"no secret, key or token".
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pyrage
import pytest

from services.admin import catalog, load
from services.admin.bundle import BackupRefused, identities_of
from services.admin.cli import run
from services.admin.embedded import embedded_dsn
from services.platform import Platform
from shared.config import Settings
from shared.seal import ShamirSeal, initialise, open_local_kms
from tests.conftest import (
    PG_ADMIN,
    SECRET_VALUES,
    Api,
    initialised,
    own_platform,
    remember_secret,
    setting_values,
    start_platform,
)
from tests.drill.__main__ import check_load
from tests.drill.known import Known, check_known_set, forget_redis_admin, keep_writing, write_known_set

CHUNK = 64 * 1024


@dataclass
class Source:
    platform: Platform
    api: Api
    client: dict[str, str]
    known: Known
    settings: Settings
    tmp: Path
    identity: Path
    recipient: str
    #: what must never be printed: the KEKs of every keyring file, the age identity, tokens (and every value)
    keys: list[str] = field(default_factory=list)
    backup: Path | None = None
    acked: list[int] = field(default_factory=list)
    before: int = 0
    databases: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
async def source(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str,
                 http: aiohttp.ClientSession) -> AsyncIterator[Source]:
    tmp = tmp_path_factory.mktemp("backups")
    async with own_platform("embedded", tmp / "source", pg_dsn) as platform:
        assert platform.url
        api = Api(platform.url, http)
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 201, init
        api.token = remember_secret(init["token"])
        client = {"client_id": init["client_id"], "client_secret": remember_secret(init["client_secret"])}
        known = await write_known_set(api, init["tenant_id"])
        identity = pyrage.x25519.Identity.generate()
        key_file = tmp / "operator.agekey"
        key_file.write_text(f"# an operator's age identity\n{identity}\n")
        kms = json.loads(platform.kms.path.read_bytes())
        keys = [remember_secret(k) for k in (str(identity), *kms["keys"].values())]  # never in a log line either
        made = Source(platform, api, client, known, Settings(**platform.values), tmp, key_file,
                      str(identity.to_public()), keys)
        try:
            yield made
        finally:
            await forget_redis_admin(known)
            admin = await asyncpg.connect(PG_ADMIN)
            for database in made.databases:
                await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()


async def target(source: Source, name: str) -> Settings:
    """A fresh database and an empty data directory, as the settings of the installation restored there."""
    database = f"coffer_restore_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    source.databases.append(database)
    data_dir = source.tmp / name
    data_dir.mkdir()
    return Settings(**{**source.platform.values, "data_dir": data_dir,
                       "database_url": PG_ADMIN.rsplit("/", 1)[0] + "/" + database})


async def admin(capsys: pytest.CaptureFixture[str], source: Source, settings: Settings, *argv: str) -> tuple[int, str]:
    """``python -m services.admin *argv`` in process; its exit status and what it printed (never a secret)."""
    capsys.readouterr()
    status = await run(list(argv), settings=settings)
    out = capsys.readouterr().out
    leaked = [k for k in source.keys if k in out] + [v for v in SECRET_VALUES if v in out]
    assert not leaked, f"{len(leaked)} secrets, keys or tokens in the command's output"
    return status, out


@contextlib.asynccontextmanager
async def restored(source: Source, settings: Settings, http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    """A platform started on the restored installation, and its root admin signed in again."""
    assert settings.database_url is not None
    platform = await start_platform(settings.data_dir, None, settings.database_url.get_secret_value(),
                                    schema_prefix=settings.schema_prefix)
    try:
        assert platform.url
        api = Api(platform.url, http)
        status, body, _ = await api.request("POST", "/v1/auth/token", token=None, json=source.client)
        assert status == 200, body
        api.token = remember_secret(body["access_token"])
        yield api
    finally:
        await platform.close()


async def empty(settings: Settings) -> None:
    """The target as it was made: no schema of the installation, nothing in its data directory."""
    assert settings.database_url is not None
    conn = await asyncpg.connect(settings.database_url.get_secret_value())
    try:
        assert await catalog.existing_schemas(conn, settings) == {}
    finally:
        await conn.close()
    assert list(settings.data_dir.iterdir()) == []


async def test_a_backup_taken_under_writes_restores_whole_into_a_fresh_installation(
        source: Source, capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession) -> None:
    stop, under_way = asyncio.Event(), asyncio.Event()
    writer = asyncio.create_task(keep_writing(source.api, source.known.root, stop, source.acked, under_way))
    await under_way.wait()
    source.before = len(source.acked)
    out_file = source.tmp / "first.age"
    try:
        status, out = await admin(capsys, source, source.settings, "backup", "-r", source.recipient,
                                  "--out", str(out_file))
    finally:
        stop.set()
        await writer
    assert status == 0, out
    assert "one REPEATABLE READ, read-only transaction over every schema" in out
    assert "secrets.secret_versions: " in out and f"wrote {out_file}" in out
    assert out_file.stat().st_mode & 0o777 == 0o600
    source.backup = out_file
    assert len(source.acked) > source.before  # writes went on while it ran

    settings = await target(source, "first")
    status, out = await admin(capsys, source, settings, "restore", str(out_file), "--identity", str(source.identity))
    assert status == 0, out
    assert "verify: counts of " in out and "match the manifest" in out
    assert "verify and end at the manifest's heads" in out
    assert "sampled secrets read back through the restored secrets service" in out
    assert "PROBLEM" not in out
    conn = await asyncpg.connect(settings.database_url.get_secret_value())  # type: ignore[union-attr]
    try:  # every bigserial goes on past the rows it numbered (the new writes below would collide otherwise)
        for table in ("gateway.audit_log", "secrets.outbox"):
            service, name = table.split(".")
            sql = catalog.quote(settings.schema_for(service), name)
            sequence = await conn.fetchval("SELECT pg_get_serial_sequence($1, 'seq')", sql)
            last, highest = await conn.fetchval(f"SELECT last_value FROM {sequence}"), \
                await conn.fetchval(f"SELECT max(seq) FROM {sql}")
            assert highest and last >= highest, (table, last, highest)
    finally:
        await conn.close()
    async with restored(source, settings, http) as api:
        await check_load(api, source.known.root, source.before, source.acked)
        await check_known_set(api, source.known)  # the tenant deleted later is whole here: it wasn't yet


async def test_a_target_that_is_not_empty_is_refused_and_left_as_it_was(
        source: Source, capsys: pytest.CaptureFixture[str]) -> None:
    assert source.backup is not None
    settings = await target(source, "busy")
    settings.key_file.write_text("{}")  # a data directory of another installation
    status, out = await admin(capsys, source, settings, "restore", str(source.backup), "-i", str(source.identity))
    assert status == 1
    assert "restore: refused: the target installation is not empty" in out and str(settings.key_file) in out
    assert "nothing was changed" in out
    settings.key_file.unlink()
    await empty(settings)

    # a database with an installation in it (the one the first test restored there ... or this one's own)
    conn = await asyncpg.connect(settings.database_url.get_secret_value())  # type: ignore[union-attr]
    schema = settings.schema_for("secrets")
    await conn.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".secrets (path text); '
                       f'INSERT INTO "{schema}".secrets VALUES (\'x\')')
    await conn.close()
    status, out = await admin(capsys, source, settings, "restore", str(source.backup), "-i", str(source.identity))
    assert status == 1 and f"table {schema}.secrets has rows" in out
    assert list(settings.data_dir.iterdir()) == []


def after_first_table(data: bytes, source: Source) -> int:
    """A byte of the backup in the age chunk after the one where the second table begins (age STREAM:
    after the header, a 16-byte nonce, then chunks of 64 KiB of plaintext and a 16-byte tag each)."""
    plain = pyrage.decrypt(data, identities_of(source.identity))
    second = plain.index(b'"kind": "table"', plain.index(b'"kind": "table"') + 1)
    payload = data.index(b"\n", data.index(b"\n---") + 1) + 1 + 16
    at = payload + (second // CHUNK + 1) * (CHUNK + 16) + 7
    assert at < len(data), "the backup is too small to hold a chunk after its first table's"
    return at


async def test_a_wrong_identity_a_changed_or_a_cut_backup_is_refused_and_restores_nothing(
        source: Source, capsys: pytest.CaptureFixture[str]) -> None:
    assert source.backup is not None
    settings = await target(source, "refused")
    other = source.tmp / "other.agekey"
    other.write_text(f"{pyrage.x25519.Identity.generate()}\n")
    status, out = await admin(capsys, source, settings, "restore", str(source.backup), "-i", str(other))
    assert status == 1 and "the identity does not open this backup" in out, out
    await empty(settings)

    data = source.backup.read_bytes()
    changed, cut = source.tmp / "changed.age", source.tmp / "cut.age"
    middle = bytearray(data)
    middle[after_first_table(data, source)] ^= 0x01  # the load has begun when it is found
    changed.write_bytes(bytes(middle))
    cut.write_bytes(data[:len(data) - 1000])
    for bad in (changed, cut):  # found by the first pass, which reads it whole before anything is written
        status, out = await admin(capsys, source, settings, "restore", str(bad), "-i", str(source.identity))
        assert status == 1, out
        assert "the backup does not authenticate: it was changed or cut" in out and "nothing was restored" in out
        assert "restore: gateway." not in out
        await empty(settings)

    # a backup changed between the two passes: the load had begun when the change was found, and all of it
    # (schemas, migrations, tables) is rolled back
    identities = identities_of(source.identity)
    scanned = await load.scan(source.backup, identities, settings)
    said: list[str] = []
    conn = await asyncpg.connect(settings.database_url.get_secret_value())  # type: ignore[union-attr]
    try:
        with pytest.raises(BackupRefused, match="does not authenticate"):
            await load.load(conn, settings, changed, identities, scanned, said.append)
    finally:
        await conn.close()
    assert any(line.startswith("restore: gateway.audit_log: ") for line in said), said
    await empty(settings)


async def test_a_tenant_deleted_after_the_backup_stays_unreadable_in_its_restore(
        source: Source, capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession, pg_dsn: str) -> None:
    assert source.backup is not None
    doomed = source.known.doomed
    status, _, _ = await source.api.request("DELETE", f"/v1/tenants/{doomed}")
    assert status == 204

    # the backup itself says nothing of what came after it: refused as a source, nothing touched
    settings = await target(source, "shredded")
    status, out = await admin(capsys, source, settings, "restore", str(source.backup), "-i", str(source.identity),
                              "--deleted-since", str(source.backup))
    assert status == 1 and "a backup taken before (or with) the one restored" in out, out
    await empty(settings)

    # the replaced installation's database: its tenants say which of the backup's are gone
    status, out = await admin(capsys, source, settings, "restore", str(source.backup), "-i", str(source.identity),
                              "--deleted-since", pg_dsn)
    assert status == 0, out
    assert f"tenant {doomed} was deleted after the backup (the replaced installation's database): its keys " \
           "destroyed" in out
    assert "of the deleted tenants' stayed unreadable (encryption_error)" in out and "PROBLEM" not in out
    async with restored(source, settings, http) as api:
        await check_known_set(api, source.known, deleted={doomed})
        status, body, _ = await api.request("PUT", "/v1/secrets/app/new", json={"value": "x"},
                                            headers={"X-Tenant-ID": doomed})
        assert status == 500 and body["error"]["code"] == "encryption_error"  # no new key is made for it either


async def test_a_later_backup_tells_a_restore_which_tenants_were_deleted(
        source: Source, capsys: pytest.CaptureFixture[str]) -> None:
    """The installation lost, its later backup kept: restoring the earlier one with it shuts the tenant."""
    assert source.backup is not None
    later = source.tmp / "later.age"
    status, out = await admin(capsys, source, source.settings, "backup", "-r", source.recipient, "-o", str(later))
    assert status == 0, out
    settings = await target(source, "from-later")
    status, out = await admin(capsys, source, settings, "restore", str(source.backup), "-i", str(source.identity),
                              "--deleted-since", str(later))
    assert status == 0, out
    assert f"tenant {source.known.doomed} was deleted after the backup (the later backup later.age)" in out
    assert "PROBLEM" not in out
    shutil.rmtree(settings.data_dir)


async def test_a_shamir_installation_restores_only_with_its_shares(
        source: Source, capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession, pg_dsn: str) -> None:
    """The backup holds ``keyring.sealed``, never what opens it: the restore asks for the shares (standard
    input, as recover-admin does); too few, and nothing is restored."""
    data_dir = source.tmp / "shamir"
    values = setting_values(data_dir, None, pg_dsn, seal="shamir")
    settings = Settings(**values)
    root_key, shares = await initialise(settings.sealed_keyring_file, ShamirSeal(3, 2))
    assert shares is not None
    platform = Platform(values, pg_dsn, kms=open_local_kms(settings.sealed_keyring_file, root_key))
    await platform.start()
    try:
        api = await initialised(platform, http)
        value = remember_secret(secrets.token_urlsafe(20))
        assert (await api.request("PUT", "/v1/secrets/sealed/one", json={"value": value}))[0] == 201
        backup = source.tmp / "shamir.age"
        status, out = await admin(capsys, source, settings, "backup", "-r", source.recipient, "-o", str(backup))
        assert status == 0 and "keyring.sealed (shamir seal)" in out, out
    finally:
        await platform.close()

    fresh = await target(source, "shamir-target")
    target_settings = Settings(**{**values, "data_dir": fresh.data_dir, "database_url": fresh.database_url})
    capsys.readouterr()
    status = await run(["restore", str(backup), "-i", str(source.identity)], settings=target_settings,
                       stdin=io.StringIO(shares[0] + "\n"))
    out, err = capsys.readouterr()
    assert status == 1 and "the seal does not open the backup's keyring (not_enough_shares)" in out, out + err
    assert not any(share in out + err for share in shares)
    await empty(target_settings)

    status = await run(["restore", str(backup), "-i", str(source.identity)], settings=target_settings,
                       stdin=io.StringIO("\n".join(shares[1:]) + "\n"))
    out, err = capsys.readouterr()
    assert status == 0, out + err
    assert "the shamir seal opens the backup's root keyring" in out and "1 sampled secrets read back" in out
    assert target_settings.sealed_keyring_file.exists() and not target_settings.key_file.exists()
    assert not any(share in out + err for share in shares) and value not in out


async def test_a_backup_of_one_postgresql_major_restores_into_another(
        source: Source, capsys: pytest.CaptureFixture[str]) -> None:
    """The test server (Debian's PostgreSQL, 15 here) into the embedded mode's own (pgserver's, 16): COPY's text
    format and Coffer's migrations, no client binary of either major (why not pg_dump: docs/operations.md)."""
    assert source.backup is not None
    settings = Settings(**{**source.platform.values, "database_url": None, "data_dir": source.tmp / "embedded"})
    status, out = await admin(capsys, source, settings, "restore", str(source.backup), "-i", str(source.identity))
    try:
        assert status == 0, out
        assert f"admin: embedded PostgreSQL in {settings.data_dir / 'pg'}" in out and "PROBLEM" not in out
        conn = await asyncpg.connect(embedded_dsn(settings.data_dir))
        try:
            majors = {await conn.fetchval("SHOW server_version_num")}
        finally:
            await conn.close()
        conn = await asyncpg.connect(source.settings.database_url.get_secret_value())  # type: ignore[union-attr]
        try:
            majors.add(await conn.fetchval("SHOW server_version_num"))
        finally:
            await conn.close()
        assert len({int(m) // 10000 for m in majors}) == 2, majors  # two majors, or this proves nothing
    finally:
        import pgserver  # imported already, by the restore

        pgserver.get_server(settings.data_dir / "pg").cleanup()  # this process's handle: the server stops


async def test_what_does_not_fit_is_refused_before_anything_is_written(
        source: Source, capsys: pytest.CaptureFixture[str]) -> None:
    assert source.backup is not None
    settings = await target(source, "misfit")
    cases = [
        (Settings(**{**dict(settings), "schema_prefix": "other_"}),
         f"set COFFER_SCHEMA_PREFIX={source.settings.schema_prefix}"),
        (Settings(**{**dict(settings), "seal": "shamir"}), "set COFFER_SEAL=file"),
    ]
    for misfit, says in cases:
        status, out = await admin(capsys, source, misfit, "restore", str(source.backup), "-i", str(source.identity))
        assert status == 1 and says in out, out
    await empty(settings)
    for argv, says in ((["backup", "-r", "age1nope"], "not an age recipient"),
                       (["backup"], "no recipient"),
                       (["restore", str(source.backup), "-i", str(source.tmp / "absent.key")], "can't be read"),
                       (["backup", "-r", source.recipient, "-o", str(source.backup)], "exists already")):
        status, out = await admin(capsys, source, settings, *argv)
        assert status == 1 and f"{argv[0]}: refused: " in out and says in out, out
