"""What the database holds: ciphertext only, bound to its place, re-wrappable, purged on time."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from services.platform import Platform
from services.secrets.domain import associated_data
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.crypto import seal
from tests.conftest import Api, initialised, remember_secret, start_platform
from tests.e2e.iam_helpers import totp_code
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_secrets import put, unique
from tests.integration.test_bus_contract import wait_until


async def _columns(conn: asyncpg.Connection, prefix: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_schema LIKE $1 || '%'", prefix)


async def test_the_database_holds_no_plaintext(api: Api, platform: Platform, pg_dsn: str) -> None:
    value = remember_secret("plaintext-probe-" + secrets.token_hex(12))
    json_inner = remember_secret("json-probe-" + secrets.token_hex(12))
    base = unique()
    await put(api, f"{base}/a", value)
    await put(api, f"{base}/b", {"nested": json_inner}, secret_type="json")
    needles = [value, json_inner]
    needles += [base64.b64encode(n.encode()).decode() for n in needles]
    needles += [base64.urlsafe_b64encode(n.encode()).decode().rstrip("=") for n in needles[:2]]
    conn = await asyncpg.connect(pg_dsn)
    try:
        columns = await _columns(conn, platform.settings.schema_prefix)
        assert len(columns) > 30
        for col in columns:
            table = f'"{col["table_schema"]}"."{col["table_name"]}"'
            name = f'"{col["column_name"]}"'
            for needle in needles:
                if col["data_type"] == "bytea":
                    hits = await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE position($1::bytea in {name}) > 0", needle.encode())
                else:
                    hits = await conn.fetchval(
                        f"SELECT count(*) FROM {table} WHERE {name}::text LIKE '%' || $1 || '%'", needle)
                assert hits == 0, f"{needle[:12]}… found in {table}.{name}"
    finally:
        await conn.close()


async def test_a_ciphertext_moved_to_another_path_does_not_open(api: Api, platform: Platform) -> None:
    base = unique()
    value = remember_secret("moved-" + secrets.token_hex(8))
    await put(api, f"{base}/source", value)
    await put(api, f"{base}/target")
    pool = platform.runtimes["secrets"].pool
    assert pool is not None
    await pool.execute(
        f'UPDATE "{platform.settings.schema_for("secrets")}".secret_versions t'
        " SET kek_id = s.kek_id, wrapped_key = s.wrapped_key, nonce = s.nonce, ciphertext = s.ciphertext"
        f' FROM "{platform.settings.schema_for("secrets")}".secret_versions s'
        " WHERE s.path = $1 AND t.path = $2", f"{base}/source", f"{base}/target")
    status, body, headers = await api.request("GET", f"/v1/secrets/{base}/target")
    assert_envelope(status, body, headers, "encryption_error")
    assert value not in str(body)
    assert (await api.request("GET", f"/v1/secrets/{base}/source"))[1]["value"] == value
    # one corrupted row does not block a KEK rotation: it is counted and left alone
    status, rotated, _ = await api.request("POST", "/v1/sys/kms:rotate")
    assert status == 200 and rotated["unreadable"]["secrets"] >= 1
    assert (await api.request("GET", f"/v1/secrets/{base}/source"))[1]["value"] == value


async def test_kek_rotation_rewraps_every_data_key_and_everything_still_reads(
    api: Api, platform: Platform, admin: dict[str, Any]
) -> None:
    base = unique()
    values = {f"{base}/k{i}": remember_secret(f"rot-{i}-" + secrets.token_hex(6)) for i in range(5)}
    for path, value in values.items():
        await put(api, path, value)
    pool = platform.runtimes["secrets"].pool
    gateway_pool = platform.runtimes["gateway"].pool
    assert pool is not None and gateway_pool is not None
    schema = platform.settings.schema_for("secrets")
    before = await pool.fetch(f'SELECT path, version, kek_id, ciphertext, nonce FROM "{schema}".secret_versions')
    old_keks = {r["kek_id"] for r in before}
    # a TOTP enrolment and a webhook's signing secret, sealed before the rotation too
    username, password = f"rot-{base[-6:]}", remember_secret("rotation-password-" + secrets.token_hex(4))
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": username, "kind": "user", "allowed_scopes": ["secrets:read"], "password": password})
    assert status == 201
    _, login, _ = await api.request("POST", "/v1/auth/token", token=None,
                                    json={"username": username, "password": password})
    user_token = remember_secret(login["access_token"])
    _, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp", token=user_token)
    remember_secret(enrol["otpauth_uri"])
    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9999/rot"})
    assert status == 201
    remember_secret(hook["secret"])

    status, body, _ = await api.request("POST", "/v1/sys/kms:rotate")
    assert status == 200, body
    kek_ids = body["kek_ids"]
    assert set(kek_ids) == {"gateway", "secrets", "pki", "lease", "webhooks"} and body["kek_id"] == kek_ids["gateway"]
    assert not set(kek_ids.values()) & old_keks and body["rewrapped"]["secrets"] >= len(values)
    assert body["rewrapped"]["gateway"] >= 1  # the token signing key
    rings = {name: runtime.keyring for name, runtime in platform.runtimes.items()}
    assert all(ring is not None and ring.active_key_id == kek_ids[name] for name, ring in rings.items())
    tenant_kek = rings["secrets"].tenant(admin["tenant_id"]).active_key_id
    assert tenant_kek.startswith("tkek_") and tenant_kek not in old_keks

    after = {(r["path"], r["version"]): r for r in await pool.fetch(
        f'SELECT path, version, kek_id, ciphertext, nonce FROM "{schema}".secret_versions')}
    # every data key moved under its tenant's new KEK, but those of rows other tests corrupted on purpose
    unreadable = body["unreadable"].get("secrets", 0)
    active = set(rings["secrets"].active_ids())
    assert sum(r["kek_id"] not in active for r in after.values()) == unreadable
    assert all(r["kek_id"] == tenant_kek for (p, _), r in after.items() if p.startswith(base))
    # values were not re-encrypted: only their keys moved (this test's own rows: the session platform's
    # background jobs may purge and other tests re-create theirs meanwhile, under the same path and version)
    for r in (r for r in before if r["path"].startswith(base)):
        assert after[(r["path"], r["version"])]["ciphertext"] == r["ciphertext"]
    gateway = platform.settings.schema_for("gateway")
    assert await gateway_pool.fetchval(  # the service's own values: under its own KEK
        f'SELECT count(*) FROM "{gateway}".signing_keys WHERE kek_id <> $1', kek_ids["gateway"]) == 0
    assert await gateway_pool.fetchval(  # TOTP secrets were left under the old KEK before; now their tenant's
        f'SELECT count(*) FROM "{gateway}".identities WHERE mfa_kek_id <> ALL($1::text[])',
        list(rings["gateway"].active_ids())) == 0
    webhooks = platform.settings.schema_for("webhooks")
    assert await gateway_pool.fetchval(
        f'SELECT count(*) FROM "{webhooks}".webhooks WHERE kek_id <> ALL($1::text[])'
        " OR prev_kek_id <> ALL($1::text[])", list(rings["webhooks"].active_ids())) == 0
    for service in ("gateway", "secrets", "pki", "lease", "webhooks"):
        assert await gateway_pool.fetchval(
            f'SELECT count(*) FROM "{platform.settings.schema_for(service)}".sealed_keys WHERE kek_id <> $1',
            kek_ids[service]) == 0, service
    status, _, _ = await api.request("POST", "/v1/auth/mfa", token=user_token,
                                     json={"totp_code": totp_code(enrol["otpauth_uri"])})
    assert status == 200  # the re-wrapped TOTP secret still opens
    for path, value in values.items():
        status, got, _ = await api.request("GET", f"/v1/secrets/{path}")
        assert status == 200 and got["value"] == value
    assert (await api.request("GET", "/v1/auth/whoami"))[0] == 200  # old token still verifies
    status, _, _ = await put(api, f"{base}/after")
    assert status == 201
    assert await pool.fetchval(
        f'SELECT kek_id FROM "{schema}".secret_versions WHERE path = $1', f"{base}/after") == tenant_kek


async def test_kms_rotate_needs_admin_scope(api: Api, admin: dict[str, Any]) -> None:
    _, tok, _ = await api.request("POST", "/v1/auth/token", token=None, json={
        "client_id": admin["client_id"], "client_secret": admin["client_secret"], "scopes": ["secrets:write"]})
    status, body, headers = await api.request("POST", "/v1/sys/kms:rotate", token=tok["access_token"])
    assert_envelope(status, body, headers, "insufficient_scope")


async def test_a_missing_kek_is_encryption_error_never_plaintext(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    platform = await start_platform(tmp_path, None, pg_dsn)
    try:
        api = await initialised(platform, http)
        value = remember_secret("kekless-" + secrets.token_hex(6))
        await put(api, "a/b", value)
        ring = platform.runtimes["secrets"].keyring
        assert ring is not None
        ring._keys.clear()  # noqa: SLF001 - simulate a keyring that lost its keys
        ring._tenants.clear()  # noqa: SLF001
        ring._tenant_keys.clear()  # noqa: SLF001
        ring.path, ring._stamp = tmp_path / "gone.keyring", (0, 0)  # noqa: SLF001 - and its file
        status, body, headers = await api.request("GET", "/v1/secrets/a/b")
        assert_envelope(status, body, headers, "encryption_error")
        assert value not in str(body)
        status, body, headers = await put(api, "a/c")
        assert_envelope(status, body, headers, "encryption_error")
        pool = platform.runtimes["secrets"].pool
        assert pool is not None
        assert await pool.fetchval(
            f'SELECT count(*) FROM "{platform.settings.schema_for("secrets")}".secrets WHERE path = $1', "a/c") == 0
    finally:
        await platform.close()


async def test_retention_purges_once_across_two_replicas_and_expiry_fires_once(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """Two secrets replicas on one database and one bus: each job's work is done exactly once."""
    from shared.bus import InProcessBus

    bus = InProcessBus()
    await bus.start()
    first = await start_platform(tmp_path, None, pg_dsn, bus=bus, secret_retention="1s",
                                 lifecycle_interval=0.1)
    second = Platform(first.values, pg_dsn, services=("secrets",), bus=bus)
    await second.start()
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await bus.subscribe("retention-test", ["secret.purged", "secret.expired"], on)
    try:
        api = await initialised(first, http)
        for i in range(10):
            await put(api, f"gone/{i}")
            await api.request("DELETE", f"/v1/secrets/gone/{i}")
            await put(api, f"short/{i}", ttl="1s")
        await wait_until(lambda: len(got) >= 20, timeout=20)
        await asyncio.sleep(0.8)
        purged = sorted(e.data["path"] for e in got if e.type == "secret.purged")
        expired = sorted(e.data["path"] for e in got if e.type == "secret.expired")
        assert purged == sorted(f"gone/{i}" for i in range(10))
        assert expired == sorted(f"short/{i}" for i in range(10))
        status, body, headers = await api.request("POST", "/v1/secrets/gone/0:restore")
        assert_envelope(status, body, headers, "secret_not_found")
    finally:
        await second.close()
        await first.close()
        await bus.close()


async def test_rotate_root_with_the_file_seal_is_refused_and_changes_nothing(api: Api, platform: Platform) -> None:
    key_file = platform.settings.key_file
    before = key_file.read_bytes()
    status, body, headers = await api.request("POST", "/v1/sys/rotate-root")
    err = assert_envelope(status, body, headers, "invalid_request")
    assert err["details"] == {"seal": "file"} and "migrate" in err["message"]
    assert key_file.read_bytes() == before


async def test_values_of_before_the_hierarchy_move_at_start_and_the_legacy_keks_retire_once_none_is_left(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """A value sealed under the root keyring (as before issue #29) is moved under its tenant's KEK by the next
    start; ``sys/kms:rotate?retire_legacy=true`` drops the root keyring's KEKs only once none is left."""
    platform = await start_platform(tmp_path, None, pg_dsn)
    prefix, schema = platform.settings.schema_prefix, platform.settings.schema_for("secrets")
    try:
        api = await initialised(platform, http)
        value = remember_secret("legacy-" + secrets.token_hex(6))
        await put(api, "old/one", value)
        await put(api, "old/two", "x")
        pool = platform.runtimes["secrets"].pool
        assert pool is not None
        row = await pool.fetchrow(f'SELECT tenant_id, version FROM "{schema}".secret_versions WHERE path = $1',
                                  "old/one")
        aad = associated_data(row["tenant_id"], "old/one", row["version"])
        legacy = seal(platform.kms, json.dumps(value).encode(), aad)  # the root keyring: as before the hierarchy
        await pool.execute(f'UPDATE "{schema}".secret_versions SET kek_id = $1, wrapped_key = $2, nonce = $3,'
                           " ciphertext = $4 WHERE path = 'old/one'", *legacy.__dict__.values())
        await pool.execute(f'UPDATE "{schema}".secret_versions SET kek_id = $1, wrapped_key = $2'  # damaged
                           " WHERE path = 'old/two'", legacy.kek_id, b"\0" * 60)
        token = api.token
    finally:
        await platform.close()
    platform = await start_platform(tmp_path, None, pg_dsn, schema_prefix=prefix)
    try:
        api = Api(platform.url or "", http)
        api.token = token
        status, got, _ = await api.request("GET", "/v1/secrets/old/one")
        assert status == 200 and got["value"] == value, got
        pool = platform.runtimes["secrets"].pool
        assert pool is not None
        assert (await pool.fetchval(f'SELECT kek_id FROM "{schema}".secret_versions WHERE path = $1',
                                    "old/one")).startswith("tkek_")  # moved at start
        status, body, headers = await api.request("POST", "/v1/sys/kms:rotate?retire_legacy=true")
        err = assert_envelope(status, body, headers, "invalid_request")
        assert err["details"] == {"legacy_left": 1}  # the damaged one
        old = set(json.loads(platform.kms.path.read_text())["keys"])
        await pool.execute(f"DELETE FROM \"{schema}\".secret_versions WHERE path = 'old/two'")
        status, body, _ = await api.request("POST", "/v1/sys/kms:rotate?retire_legacy=true")
        assert status == 200 and body["legacy_left"] == 0 and body["legacy_retired"] >= 1, body
        now = set(json.loads(platform.kms.path.read_text())["keys"])
        assert not {k for k in old if k.startswith("kek_")} & now  # the old KEKs are gone from the file
        assert {k for k in old if k.startswith("svc_")} <= now  # the services' shares stay
        status, got, _ = await api.request("GET", "/v1/secrets/old/one")
        assert status == 200 and got["value"] == value
    finally:
        await platform.close()
