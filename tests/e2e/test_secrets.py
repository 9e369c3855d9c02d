"""The secrets API through the gateway, on RabbitMQ + PostgreSQL (api.md §5)."""

from __future__ import annotations

import asyncio
import base64
import secrets
from datetime import datetime
from typing import Any

import pytest

from services.platform import Platform
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.cursors import CursorCodec
from shared.db import sealed_keys
from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import allow, identity
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.integration.test_bus_contract import wait_until


def unique(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


async def put(api: Api, path: str, value: Any = None, **body: Any) -> tuple[int, Any, Any]:
    if value is None:
        value = remember_secret("v-" + secrets.token_urlsafe(12))
    return await api.request("PUT", f"/v1/secrets/{path}", json={"value": value, **body})


async def test_write_read_update_and_versions(api: Api) -> None:
    base = unique()
    v1 = remember_secret("pässwörd-🔑-" + secrets.token_hex(8))
    status, meta, headers = await put(api, f"{base}/db/password", v1, secret_type="password",
                                      metadata={"owner": "team-a", "ключ": "значение"})
    assert status == 201 and headers["ETag"] == '"1"'
    assert meta["path"] == f"{base}/db/password" and meta["version"] == 1
    assert meta["secret_type"] == "password" and meta["metadata"]["ключ"] == "значение"
    assert "value" not in meta and meta["created_by"].startswith("idn_")
    assert set(meta) == {"path", "version", "secret_type", "metadata", "expires_at", "created_at",
                         "created_by", "updated_at", "deleted_at", "purge_after", "version_created_at",
                         "version_created_by"}

    status, meta2, headers = await put(api, f"{base}/db/password", {"user": "app", "n": [1, 2]},
                                       secret_type="json")
    assert status == 200 and meta2["version"] == 2 and headers["ETag"] == '"2"'

    status, got, headers = await api.request("GET", f"/v1/secrets/{base}/db/password")
    assert status == 200 and got["value"] == {"user": "app", "n": [1, 2]} and got["version"] == 2
    status, old, _ = await api.request("GET", f"/v1/secrets/{base}/db/password?version=1")
    assert status == 200 and old["value"] == v1 and old["secret_type"] == "password"

    status, page, _ = await api.request("GET", f"/v1/secrets/{base}/db/password:versions")
    assert status == 200 and [i["version"] for i in page["items"]] == [2, 1]
    assert page["next_cursor"] is None and all("value" not in i for i in page["items"])


async def test_a_secret_and_its_versions_say_which_write_each_time_is(api: Api) -> None:
    """``created_at``/``created_by`` of a secret are its first write; of a version item, that version's write.
    ``version_created_at``/``version_created_by`` are the shown version's write on every answer, so the same
    version answers the same moment whichever call shows it (docs/secrets.md, Times)."""
    path = f"{unique()}/db"
    status, first, _ = await put(api, path)
    assert status == 201 and first["version_created_at"] == first["created_at"], first
    writer = await identity(api, ["secrets:write", "secrets:read"], [allow([f"secrets/{path}"], ["write", "read"])])
    await asyncio.sleep(0.01)
    status, second, _ = await api.request("PUT", f"/v1/secrets/{path}", token=writer["token"],
                                          json={"value": remember_secret(secrets.token_hex(8))})
    assert status == 200 and second["version"] == 2, second
    # the secret: created by the first write, its version 2 written later by someone else
    assert second["created_at"] == first["created_at"] and second["created_by"] == first["created_by"]
    assert datetime.fromisoformat(second["version_created_at"]) > datetime.fromisoformat(first["created_at"])
    assert second["version_created_by"] == writer["id"] != second["created_by"]

    _, got, _ = await api.request("GET", f"/v1/secrets/{path}")
    _, old, _ = await api.request("GET", f"/v1/secrets/{path}?version=1")
    _, listed, _ = await api.request("GET", f"/v1/secrets?prefix={path}")
    _, page, _ = await api.request("GET", f"/v1/secrets/{path}:versions")
    v2, v1 = page["items"]
    for about_the_secret in (got, old, listed["items"][0]):
        assert about_the_secret["created_at"] == first["created_at"], about_the_secret
    assert got["version_created_at"] == listed["items"][0]["version_created_at"] == v2["version_created_at"] \
        == second["version_created_at"]
    assert old["version_created_at"] == v1["version_created_at"] == first["version_created_at"]
    assert (got["version_created_by"], old["version_created_by"]) == (writer["id"], first["created_by"])
    for item in (v1, v2):  # a version item: its created_* are the version's write, as they always were
        assert (item["created_at"], item["created_by"]) == (item["version_created_at"], item["version_created_by"])


async def test_list_is_paginated_in_path_order_under_a_prefix(api: Api) -> None:
    base = unique()
    paths = sorted(f"{base}/svc/{name}" for name in ("b", "a", "c.d", "A", "z-1", "z_2", "9"))
    for p in paths:
        assert (await put(api, p))[0] == 201
    await put(api, f"{base}x/outside")
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/v1/secrets?prefix={base}/&limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.request("GET", query)
        assert status == 200 and len(page["items"]) <= 3
        seen += [i["path"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == paths  # byte order, all of them, none outside the prefix


async def test_soft_delete_restore_and_purge(api: Api) -> None:
    path = f"{unique()}/to/delete"
    await put(api, path)
    status, _, _ = await api.request("DELETE", f"/v1/secrets/{path}")
    assert status == 204
    status, body, headers = await api.request("GET", f"/v1/secrets/{path}")
    assert_envelope(status, body, headers, "secret_not_found")
    status, body, headers = await put(api, path)
    err = assert_envelope(status, body, headers, "secret_exists")
    assert err["details"]["purge_after"].endswith("Z")  # RFC 3339 UTC, as every answer (issue #28)
    status, body, headers = await api.request("DELETE", f"/v1/secrets/{path}")
    assert_envelope(status, body, headers, "secret_not_found")

    status, meta, _ = await api.request("POST", f"/v1/secrets/{path}:restore")
    assert status == 200 and meta["deleted_at"] is None and meta["purge_after"] is None
    assert (await api.request("GET", f"/v1/secrets/{path}"))[0] == 200

    status, _, _ = await api.request("POST", f"/v1/secrets/{path}:purge")
    assert status == 204
    for method, suffix in (("GET", ""), ("GET", ":versions"), ("POST", ":restore"), ("POST", ":purge"),
                           ("DELETE", "")):
        status, body, headers = await api.request(method, f"/v1/secrets/{path}{suffix}")
        assert_envelope(status, body, headers, "secret_not_found")
    status, meta, _ = await put(api, path)
    assert status == 201 and meta["version"] == 1  # a purged path starts afresh


async def test_version_codes(api: Api) -> None:
    path = f"{unique()}/cas"
    status, body, headers = await put(api, path, expected_version=3)
    assert_envelope(status, body, headers, "version_conflict")
    assert (await put(api, path, expected_version=0))[0] == 201
    status, body, headers = await put(api, path, expected_version=0)  # create-only, exists
    err = assert_envelope(status, body, headers, "version_conflict")
    assert err["details"]["current_version"] == 1
    assert (await api.request("PUT", f"/v1/secrets/{path}", json={"value": remember_secret(f"x2-{path}")},
                              headers={"If-Match": '"1"'}))[0] == 200
    status, body, headers = await api.request("PUT", f"/v1/secrets/{path}", json={"value": "x3"},
                                              headers={"If-Match": '"1"'})
    assert_envelope(status, body, headers, "version_conflict")
    status, body, headers = await api.request("PUT", f"/v1/secrets/{path}", json={"value": "x3", "expected_version": 2},
                                              headers={"If-Match": '"1"'})
    assert_envelope(status, body, headers, "validation_error")
    status, body, headers = await api.request("GET", f"/v1/secrets/{path}?version=9")
    assert_envelope(status, body, headers, "version_not_found")
    for bad in ("0", "-1", "x", "1.5", "99999999999"):
        status, body, headers = await api.request("GET", f"/v1/secrets/{path}?version={bad}")
        assert_envelope(status, body, headers, "validation_error")


async def test_twenty_concurrent_writers_one_wins(api: Api, platform: Platform, pg_dsn: str) -> None:
    path = f"{unique()}/race"
    await put(api, path)
    results = await asyncio.gather(*(put(api, path, expected_version=1) for _ in range(20)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200] + [409] * 19
    assert all(r[1]["error"]["code"] == "version_conflict" for r in results if r[0] == 409)
    schema = platform.settings.schema_for("secrets")
    pool = platform.runtimes["secrets"].pool
    assert pool is not None
    rows = await pool.fetch(f'SELECT version FROM "{schema}".secret_versions WHERE path = $1', path)
    assert sorted(r["version"] for r in rows) == [1, 2]


async def test_expiry_by_ttl_and_expires_at(api: Api) -> None:
    path = f"{unique()}/short"
    status, meta, _ = await put(api, path, ttl="1s")
    assert status == 201 and meta["expires_at"]
    status, _, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert status == 200
    await asyncio.sleep(1.3)
    status, body, headers = await api.request("GET", f"/v1/secrets/{path}")
    err = assert_envelope(status, body, headers, "secret_expired")
    assert err["details"]["path"] == path and "value" not in str(body)
    assert (await api.request("GET", f"/v1/secrets/{path}:versions"))[0] == 200
    status, meta, _ = await put(api, f"{path}2", expires_at="2999-01-01T00:00:00Z")
    assert status == 201 and meta["expires_at"].startswith("2999-01-01")


HOSTILE_PATHS = [
    ("..", "invalid_path"), ("%2e%2e", "invalid_path"), ("a/%2e%2e/b", "invalid_path"),
    ("a/../b", "invalid_path"), ("/", "invalid_path"), ("//", "invalid_path"), ("a//b", "invalid_path"),
    ("a/", "invalid_path"), (".hidden", "invalid_path"), ("-x", "invalid_path"),
    ("a" * 129, "invalid_path"), ("/".join(["a" * 31] * 17), "invalid_path"),
    ("/".join(["b" * 127] * 4) + "/c", "invalid_path"),  # 513 characters
    ("a%00b", "invalid_path"), ("nul%00", "invalid_path"), ("%D0%B0pp/key", "invalid_path"),  # Cyrillic а
    ("a%2Fb", "invalid_path"), ("sp%20ace", "invalid_path"), ("a%3Ab", "invalid_path"),
    ("a:b", "invalid_request"), ("a:versions", "invalid_request"),
]


@pytest.mark.parametrize(("raw", "code"), HOSTILE_PATHS)
async def test_hostile_paths_are_refused_and_nothing_is_stored(
    api: Api, platform: Platform, raw: str, code: str
) -> None:
    from yarl import URL

    url = URL(api.url + "/v1/secrets/" + raw, encoded=True)
    before = await _count_versions(platform)
    async with api.session.put(url, json={"value": remember_secret("hostile-" + secrets.token_hex(6))},
                               headers={"Authorization": f"Bearer {api.token}"}) as resp:
        body = await resp.json(content_type=None)
        assert_envelope(resp.status, body, resp.headers, code)
    async with api.session.get(url, headers={"Authorization": f"Bearer {api.token}"}) as resp:
        assert resp.status in (400, 404)
    assert await _count_versions(platform) == before


async def _count_versions(platform: Platform) -> int:
    pool = platform.runtimes["secrets"].pool
    assert pool is not None
    return int(await pool.fetchval(
        f'SELECT count(*) FROM "{platform.settings.schema_for("secrets")}".secret_versions'))


CERT = """-----BEGIN CERTIFICATE-----
not really
-----END CERTIFICATE-----"""

HOSTILE_BODIES: list[tuple[Any, str, str | None]] = [
    ({"value": "x" * (64 * 1024 + 1)}, "validation_error", "value"),
    ({"value": "ü" * (32 * 1024 + 1)}, "validation_error", "value"),  # > 64 KiB as UTF-8
    ({"value": "x", "metadata": {f"k{i}": "v" for i in range(65)}}, "validation_error", "metadata"),
    ({"value": "x", "metadata": {"k": "v" * 1025}}, "validation_error", "metadata"),
    ({"value": "x", "metadata": {"k": 5}}, "validation_error", "metadata.k"),
    ({"value": "x", "metadata": ["a"]}, "validation_error", "metadata"),
    ({"value": "a string", "secret_type": "json"}, "validation_error", "value"),
    ({"value": {"a": 1}}, "validation_error", "value"),
    ({"value": 5}, "validation_error", "value"),
    ({"value": None}, "validation_error", "value"),
    ({"value": True, "secret_type": "password"}, "validation_error", "value"),
    ({}, "validation_error", "value"),
    ({"value": "x", "secret_type": "nonsense"}, "invalid_secret_type", None),
    ({"value": "x", "secret_type": "JSON"}, "invalid_secret_type", None),
    ({"value": "x", "secret_type": 3}, "validation_error", "secret_type"),
    ({"value": CERT, "secret_type": "certificate"}, "validation_error", "value"),
    ({"value": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "secret_type": "private_key"},
     "validation_error", "value"),
    ({"value": "x", "ttl": "-1s"}, "invalid_duration", None),
    ({"value": "x", "ttl": "1x"}, "invalid_duration", None),
    ({"value": "x", "ttl": "99999999999d"}, "invalid_duration", None),
    ({"value": "x", "ttl": "0s"}, "invalid_duration", None),
    ({"value": "x", "ttl": ""}, "invalid_duration", None),
    ({"value": "x", "ttl": "1h 30m"}, "invalid_duration", None),
    ({"value": "x", "ttl": 3600}, "validation_error", "ttl"),
    ({"value": "x", "ttl": "1h", "expires_at": "2999-01-01T00:00:00Z"}, "validation_error", "ttl"),
    ({"value": "x", "expires_at": "2001-01-01T00:00:00Z"}, "validation_error", "expires_at"),
    ({"value": "x", "expires_at": "2999-01-01T00:00:00"}, "validation_error", "expires_at"),  # no zone
    ({"value": "x", "expires_at": "tomorrow"}, "validation_error", "expires_at"),
    ({"value": "x", "expected_version": -1}, "validation_error", "expected_version"),
    ({"value": "x", "expected_version": "1"}, "validation_error", "expected_version"),
    ({"value": "x", "unknown_field": 1}, "validation_error", "unknown_field"),
    ([1, 2], "invalid_request", None),
    ("just a string", "invalid_request", None),
]


@pytest.mark.parametrize(("body", "code", "field"), HOSTILE_BODIES)
async def test_hostile_bodies_are_refused_and_nothing_is_stored(
    api: Api, platform: Platform, body: Any, code: str, field: str | None
) -> None:
    path = f"{unique()}/hostile"
    before = await _count_versions(platform)
    status, answer, headers = await api.request("PUT", f"/v1/secrets/{path}", json=body)
    err = assert_envelope(status, answer, headers, code)
    if field:
        assert field in [f["field"] for f in err["details"]["fields"]], err
    assert await _count_versions(platform) == before
    assert (await api.request("GET", f"/v1/secrets/{path}"))[0] == 404
    if isinstance(body, dict) and isinstance(body.get("value"), str) and len(body["value"]) < 100:
        assert body["value"] not in str(answer) or body["value"] == "x"


async def test_value_of_exactly_64_kib_is_accepted(api: Api) -> None:
    status, _, _ = await put(api, f"{unique()}/big", "y" * 64 * 1024)
    assert status == 201


async def test_valid_certificate_and_private_key_types(api: Api) -> None:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    pem_cert = cert.public_bytes(serialization.Encoding.PEM).decode()
    pem_key = remember_secret(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()).decode())
    base = unique()
    assert (await put(api, f"{base}/cert", pem_cert, secret_type="certificate"))[0] == 201
    assert (await put(api, f"{base}/key", pem_key, secret_type="private_key"))[0] == 201
    status, got, _ = await api.request("GET", f"/v1/secrets/{base}/key")
    assert got["value"] == pem_key


def _cursor_text(cursor: str) -> str:
    """Everything a holder can read in a cursor: each part base64url-decoded."""
    return " ".join(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode("latin-1")
                    for part in cursor.split("."))


async def test_a_list_cursor_names_no_secret_the_caller_cant_list(api: Api) -> None:
    """Attack: a caller that may list only ``team/**`` pages through ``GET /v1/secrets?limit=1``: the hidden
    secrets are left out of each page, but the cursor's body (signed, not sealed) named where it resumes — the
    last row of the page, a hidden secret's path — so every path of the tenant could be read off the cursors."""
    base = unique()
    hidden = [f"{base}/hidden/customer-{n}-prod-db" for n in range(3)]
    for path in (*hidden, f"{base}/team/app"):
        assert (await put(api, path))[0] == 201
    narrow = await identity(api, ["secrets:read"], [allow([f"secrets/{base}/team/**"], ["list", "read"])])
    cursor, seen = None, []
    for _ in range(10):
        status, page, _ = await api.request("GET", f"/v1/secrets?prefix={base}/&limit=1" + (
            f"&cursor={cursor}" if cursor else ""), token=narrow["token"])
        assert status == 200
        seen += [item["path"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert not any(path.split("/", 1)[1] in _cursor_text(cursor) for path in hidden), _cursor_text(cursor)
    assert seen == [f"{base}/team/app"] and cursor is None


async def test_cursor_tampered_foreign_or_expired_is_invalid_cursor(api: Api, platform: Platform) -> None:
    base = unique()
    for i in range(3):
        await put(api, f"{base}/k{i}")
    status, page, _ = await api.request("GET", f"/v1/secrets?prefix={base}/&limit=1")
    cursor = page["next_cursor"]
    assert cursor
    deps = platform.runtimes["secrets"].deps
    assert deps is not None
    key = await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor")
    me = (await api.request("GET", "/v1/auth/whoami"))[1]["tenant"]["id"]
    query = {"kind": "secrets", "prefix": f"{base}/", "limit": 1}
    body, mac = cursor.split(".")
    bad = {
        "tampered_mac": f"{body}.{mac[:-2]}AA",
        "tampered_body": f"{body[:-2]}AA.{mac}",
        "garbage": "not-a-cursor",
        "other_tenant": CursorCodec(key).encode("ten_someone_else", query, f"{base}/k0"),
        "expired": CursorCodec(key, ttl=-10).encode(me, query, f"{base}/k0"),
        "other_key": CursorCodec(b"k" * 32).encode(me, query, f"{base}/k0"),
    }
    for name, c in bad.items():
        status, answer, headers = await api.request("GET", f"/v1/secrets?prefix={base}/&limit=1&cursor={c}")
        assert_envelope(status, answer, headers, "invalid_cursor"), name
    for other_query in (f"prefix={base}/k&limit=1", f"prefix={base}/&limit=2"):
        status, answer, headers = await api.request("GET", f"/v1/secrets?{other_query}&cursor={cursor}")
        assert_envelope(status, answer, headers, "invalid_cursor")
    status, page2, _ = await api.request("GET", f"/v1/secrets?prefix={base}/&limit=1&cursor={cursor}")
    assert status == 200 and page2["items"][0]["path"] == f"{base}/k1"
    for bad_limit in ("0", "1001", "x", "-5"):
        status, answer, headers = await api.request("GET", f"/v1/secrets?prefix={base}/&limit={bad_limit}")
        assert_envelope(status, answer, headers, "validation_error")
    status, answer, headers = await api.request("GET", "/v1/secrets?prefix=../etc")
    assert_envelope(status, answer, headers, "invalid_path")


async def test_scopes_guard_reads_and_writes(api: Api, admin: dict[str, Any]) -> None:
    path = f"{unique()}/scoped"
    await put(api, path)
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None, json={
        "client_id": admin["client_id"], "client_secret": admin["client_secret"], "scopes": ["secrets:read"]})
    reader = tok["access_token"]
    assert (await api.request("GET", f"/v1/secrets/{path}", token=reader))[0] == 200
    for method, suffix in (("PUT", ""), ("DELETE", ""), ("POST", ":purge"), ("POST", ":restore")):
        status, body, headers = await api.request(method, f"/v1/secrets/{path}{suffix}", token=reader,
                                                  json={"value": "nope"})
        assert_envelope(status, body, headers, "insufficient_scope")
    status, body, headers = await api.request("GET", f"/v1/secrets/{path}", token=None)
    assert_envelope(status, body, headers, "authentication_required")


async def test_every_change_emits_its_event_without_the_value(api: Api, platform: Platform) -> None:
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await platform.bus.subscribe("test-secret-events-" + unique(), ["secret.#"], on)
    path = f"{unique()}/evented"
    value = remember_secret("event-probe-" + secrets.token_hex(8))
    await put(api, path, value)
    await put(api, path, value + "2", secret_type="password")
    await api.request("DELETE", f"/v1/secrets/{path}")
    await api.request("POST", f"/v1/secrets/{path}:restore")
    await api.request("POST", f"/v1/secrets/{path}:purge")
    mine = lambda: [e for e in got if e.data.get("path") == path]  # noqa: E731
    await wait_until(lambda: len(mine()) >= 5, timeout=15)
    events = sorted(mine(), key=lambda e: e.occurred_at)
    assert [e.type for e in events] == ["secret.created", "secret.updated", "secret.deleted",
                                        "secret.restored", "secret.purged"]
    assert events[1].data == {"path": path, "version": 2, "secret_type": "password"}
    assert all(e.tenant_id and e.request_id for e in events)
    assert value not in repr([e.model_dump() for e in got])


async def test_expiry_event_once_per_version(api: Api, platform: Platform) -> None:
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await platform.bus.subscribe("test-expiry-" + unique(), ["secret.expired"], on)
    path = f"{unique()}/expiring"
    await put(api, path, ttl="1s")
    await put(api, path, ttl="1s")
    await wait_until(lambda: len([e for e in got if e.data["path"] == path]) >= 2, timeout=15)
    await asyncio.sleep(1.0)  # a few more sweeps: no repeats
    mine = [e for e in got if e.data["path"] == path]
    assert sorted(e.data["version"] for e in mine) == [1, 2]
