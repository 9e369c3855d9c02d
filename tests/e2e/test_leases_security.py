"""The lease service's error codes, policy and tenancy, targets going down, and hostile input, through
the gateway (on RabbitMQ).

What an ordinary account of another tenant, a helpdesk identity with one
narrow policy, or a tenant aiming an engine at the operator's network could
make the lease service do — and can't; and what happens to a lease whose
target is away when it should end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from services.platform import Platform
from tests.conftest import Api, free_port, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.lease_targets import (
    LEASE_PG,
    TcpProxy,
    pg_admin,
    pg_connect,
    pg_port,
    pg_role_exists,
    pg_role_statements,
    rabbit_admin,
    )
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_leases import creds, engine, lease_status, pg_config, pg_engine_and_role, role
from tests.integration.test_bus_contract import wait_until_async

LEASES_ALL = ["read", "list", "write", "issue", "revoke", "manage"]


async def expect(api: Api, code: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, body, headers = await api.request(method, path, **kwargs)
    return assert_envelope(status, body, headers, code)


async def schema_rows(platform: Platform, pg_dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(pg_dsn)
    try:
        schema = platform.values["schema_prefix"] + "lease"
        return list(await conn.fetch(query.replace("{schema}", f'"{schema}"'), *args))
    finally:
        await conn.close()


# -- engines ------------------------------------------------------------------------------------------

async def test_engine_configs_are_checked_and_nothing_is_stored_for_a_bad_one(
        api: Api, platform: Platform, pg_dsn: str, pg: dict[str, Any], rds: dict[str, Any]) -> None:
    closed = free_port()
    bad: list[tuple[str, str, dict[str, Any]]] = [
        ("invalid_config", "postgresql", {}),
        ("invalid_config", "postgresql", {"connection_url": "mysql://a:b@127.0.0.1/x"}),
        ("invalid_config", "postgresql", {"connection_url": "postgresql://a@127.0.0.1/x"}),  # no password
        ("invalid_config", "postgresql", {"connection_url": pg["url"] + "?options=-c"}),
        ("invalid_config", "postgresql", {"connection_url": pg["url"], "sslmode": "prefer"}),
        ("invalid_config", "postgresql", {"connection_url": pg["url"], "extra": 1}),
        ("invalid_config", "postgresql", {"connection_url": 5}),
        # addresses the operator has not allowed (only 127.0.0.0/8 here): private, public, unresolvable
        ("invalid_config", "postgresql", {"connection_url": "postgresql://a:b@10.1.2.3:5432/x"}),
        ("invalid_config", "postgresql", {"connection_url": "postgresql://a:b@8.8.8.8:5432/x"}),
        ("invalid_config", "postgresql", {"connection_url": "postgresql://a:b@[::1]:5432/x"}),
        ("invalid_config", "redis", {"host": "no-such-host.invalid", "password": "x"}),
        ("invalid_config", "redis", {"host": "169.254.169.254", "port": 6379, "password": "x"}),
        ("invalid_config", "rabbitmq", {"management_url": "http://10.0.0.1:15672", "username": "a", "password": "b"}),
        ("invalid_config", "rabbitmq", {"management_url": "file:///etc/passwd", "username": "a", "password": "b"}),
        ("invalid_config", "postgresql", {"connection_url": "postgresql://a:b@127.0.0.1:22/x"}),  # port < 1024
        # credentials the target refuses
        ("invalid_config", "postgresql", {"connection_url": pg["url"].replace(pg["password"], "wrong")}),
        ("invalid_config", "redis", {**rds, "password": "wrong"}),
        # nothing listens there
        ("engine_unreachable", "postgresql", {"connection_url": f"postgresql://a:b@127.0.0.1:{closed}/x"}),
        ("engine_unreachable", "redis", {"host": "127.0.0.1", "port": closed, "password": "x"}),
        ("engine_unreachable", "rabbitmq", {"management_url": f"http://127.0.0.1:{closed}", "username": "a",
                                            "password": "b"}),
    ]
    for code, kind, config in bad:
        err = await expect(api, code, "POST", "/v1/engines", json={"name": name("bad"), "type": kind,
                                                                    "config": config})
        assert pg["password"] not in repr(err) and rds["password"] not in repr(err), err
    for body in ({"name": "UPPER", "type": "redis", "config": {}}, {"name": "ok", "type": "mysql", "config": {}},
                 {"name": "ok", "type": "redis"}, {"name": "ключ", "type": "redis", "config": {}},
                 {"name": "a/b", "type": "redis", "config": {}}, {"name": 5, "type": "redis", "config": {}},
                 {"name": "ok", "type": "redis", "config": "x"}):
        await expect(api, "validation_error", "POST", "/v1/engines", json=body)
    await expect(api, "invalid_request", "POST", "/v1/engines", data=b'{"name": "' + b"a" * 3_000_000 + b'"}')
    await expect(api, "invalid_request", "POST", "/v1/engines", data=b"[1, 2")
    assert not await schema_rows(platform, pg_dsn, "SELECT 1 FROM {schema}.engines WHERE name LIKE 'bad-%'")


async def test_admins_without_the_privileges_leases_need_are_refused(api: Api) -> None:
    async with pg_admin(create_role=False) as weak:
        err = await expect(api, "invalid_config", "POST", "/v1/engines", json={
            "name": name("weak"), "type": "postgresql", "config": pg_config(weak)})
        assert "CREATEROLE" in err["message"]
    async with pg_admin(signal=False) as weak:
        err = await expect(api, "invalid_config", "POST", "/v1/engines", json={
            "name": name("weak"), "type": "postgresql", "config": pg_config(weak)})
        assert "pg_signal_backend" in err["message"]
    async with rabbit_admin() as admin:
        from tests.e2e.lease_targets import rabbit
        await rabbit("PUT", f"/api/users/{admin['username']}", {"password": admin["password"], "tags": "management"})
        await expect(api, "invalid_config", "POST", "/v1/engines", json={
            "name": name("weak"), "type": "rabbitmq",
            "config": {k: admin[k] for k in ("management_url", "username", "password")}})


async def test_engine_and_role_codes(api: Api, pg: dict[str, Any], rds: dict[str, Any]) -> None:
    eng = await engine(api, "postgresql", pg_config(pg))
    r = f"/v1/engines/{eng['name']}/roles"
    await expect(api, "name_conflict", "POST", "/v1/engines", json={"name": eng["name"], "type": "postgresql",
                                                                     "config": pg_config(pg)})
    await expect(api, "engine_not_found", "GET", "/v1/engines/nope")
    await expect(api, "engine_not_found", "PATCH", "/v1/engines/nope", json={"rotate_admin_password": True})
    await expect(api, "engine_not_found", "DELETE", "/v1/engines/nope")
    await expect(api, "engine_not_found", "GET", "/v1/engines/nope/roles")
    await expect(api, "engine_not_found", "PUT", "/v1/engines/nope/roles/r", json={"acl_rules": ["+ping"]})
    await expect(api, "invalid_request", "GET", "/v1/engines/%2e%2e/roles/r")  # normalised: /v1/roles/r
    for hostile in ("a.b", "UPPER", "%00", "%F0%9F%94%91", "a%2Fb", "x" * 300):
        await expect(api, "engine_not_found", "GET", f"/v1/engines/{hostile}/roles/r")
    await expect(api, "engine_not_found", "POST", "/v1/engines/nope/roles/r:credentials", json={})
    await expect(api, "role_not_found", "GET", f"{r}/nope")
    await expect(api, "role_not_found", "DELETE", f"{r}/nope")
    await expect(api, "role_not_found", "POST", f"{r}/nope:credentials", json={})
    await expect(api, "invalid_request", "POST", f"{r}/nope:explode", json={})
    await expect(api, "invalid_request", "POST", f"{r}/nope", json={})
    statements = pg_role_statements(pg["schema"])
    for role_name, body in (
            ("Bad%20Name", {"creation_statements": statements}),
            ("ok", {}),  # a postgresql role needs its statements
            ("ok", {"creation_statements": statements, "acl_rules": ["+ping"]}),  # a redis field
            ("ok", {"creation_statements": ["CREATE ROLE x"]}),  # does not name the user
            ("ok", {"creation_statements": ['CREATE ROLE "{{name}}" {{secret_sauce}}']}),
            ("ok", {"creation_statements": statements, "default_ttl": "2h", "max_ttl": "1h"})):
        await expect(api, "invalid_role", "PUT", f"{r}/{role_name}", json=body)
    await expect(api, "invalid_duration", "PUT", f"{r}/ok", json={"creation_statements": statements,
                                                                  "max_ttl": "1 fortnight"})
    await expect(api, "validation_error", "PUT", f"{r}/ok", json={"creation_statements": "CREATE ROLE"})
    redis_engine = await engine(api, "redis", rds)
    for rules in (["on"], [">password"], ["nopass"], ["resetpass"], ["+get extra"], ["<hash"], ["#abc"]):
        await expect(api, "invalid_role", "PUT", f"/v1/engines/{redis_engine['name']}/roles/x",
                     json={"acl_rules": rules})
    rol = await role(api, eng["name"], {"creation_statements": statements, "max_ttl": "1h"})
    status, again, _ = await api.request("PUT", f"{r}/{rol}", json={"creation_statements": statements,
                                                                   "max_ttl": "2h"})
    assert status == 200 and again["max_ttl"] == "2h"
    status, listed, _ = await api.request("GET", r)
    assert status == 200 and [x["name"] for x in listed["items"]] == [rol]
    await expect(api, "ttl_exceeds_max", "POST", f"{r}/{rol}:credentials", json={"ttl": "3h"})
    await expect(api, "invalid_duration", "POST", f"{r}/{rol}:credentials", json={"ttl": "soon"})
    await expect(api, "validation_error", "POST", f"{r}/{rol}:credentials", json={"ttl": 60})
    await expect(api, "lease_not_found", "GET", "/v1/leases/lea_0000")
    await expect(api, "lease_not_found", "GET", "/v1/leases/..%2F..%2Fengines")
    await expect(api, "lease_not_found", "POST", "/v1/leases/lea_0000:renew", json={})
    await expect(api, "lease_not_found", "POST", "/v1/leases/lea_0000:revoke")
    await expect(api, "engine_not_found", "POST", "/v1/leases:revoke-prefix", json={"engine": "nope"})
    await expect(api, "validation_error", "POST", "/v1/leases:revoke-prefix", json={})
    assert (await api.request("DELETE", f"{r}/{rol}"))[0] == 204
    await expect(api, "role_not_found", "GET", f"{r}/{rol}")


async def test_a_failing_creation_statement_leaves_no_user_and_tells_no_secret(
        api: Api, platform: Platform, pg_dsn: str, pg: dict[str, Any]) -> None:
    eng = await engine(api, "postgresql", pg_config(pg))
    statements = ["CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}';", "SELECT 1/0 -- '{{password}}'"]
    rol = await role(api, eng["name"], {"creation_statements": statements})
    err = await expect(api, "invalid_role", "POST", f"/v1/engines/{eng['name']}/roles/{rol}:credentials", json={})
    assert err["details"]["sqlstate"] == "22012" and "SCRAM" not in repr(err) and "1/0" not in repr(err)
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    try:
        assert not await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", f"v-{rol}-%")
    finally:
        await conn.close()
    assert not await schema_rows(platform, pg_dsn, "SELECT 1 FROM {schema}.leases WHERE engine = $1", eng["name"])


async def test_max_leases_quota_holds_under_concurrent_requests(api: Api, rds: dict[str, Any]) -> None:
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": name("t"),
                                                                      "quotas": {"max_leases": 2}})
    assert status == 201, child
    there = {"X-Tenant-ID": child["id"]}
    eng = await engine(api, "redis", rds, headers=there)
    status, _, _ = await api.request("PUT", f"/v1/engines/{eng['name']}/roles/q", headers=there,
                                     json={"acl_rules": ["+ping"]})
    assert status == 201
    path = f"/v1/engines/{eng['name']}/roles/q:credentials"
    answers = await asyncio.gather(*(api.request("POST", path, headers=there, json={}) for _ in range(6)))
    made = [a for a in answers if a[0] == 201]
    assert len(made) == 2
    for status, body, headers in answers:
        if status != 201:
            err = assert_envelope(status, body, headers, "quota_exceeded")
            assert err["details"] == {"quota": "max_leases", "limit": 2} and headers["Retry-After"]
    for _, body, _ in made:
        remember_secret(body["data"]["password"])
    assert (await api.request("POST", f"/v1/leases/{made[0][1]['lease_id']}:revoke", headers=there))[0] == 204
    status, body, _ = await api.request("POST", path, headers=there, json={})
    assert status == 201  # a revoked lease frees its place
    remember_secret(body["data"]["password"])
    assert (await api.request("DELETE", f"/v1/tenants/{child['id']}"))[0] == 204


# -- a target that is away --------------------------------------------------------------------------------

async def test_a_revocation_while_the_target_is_down_is_retried_until_it_lands(
        api: Api, pg: dict[str, Any]) -> None:
    proxy = TcpProxy(("127.0.0.1", pg_port()))
    await proxy.start()
    try:
        eng = await engine(api, "postgresql", pg_config(pg, connection_url=pg["url"].replace(
            f":{pg_port()}/", f":{proxy.port}/")))
        rol = await role(api, eng["name"], {"creation_statements": pg_role_statements(pg["schema"]),
                                            "default_ttl": "2s"})
        revoked, expiring = await creds(api, eng["name"], rol, ttl="1h"), await creds(api, eng["name"], rol)
        await proxy.stop()
        err = await expect(api, "engine_unreachable", "POST", f"/v1/leases/{revoked['lease_id']}:revoke")
        assert err["details"] == {"engine": eng["name"], "lease_id": revoked["lease_id"], "status": "revoking"}
        await expect(api, "engine_unreachable", "POST",
                     f"/v1/engines/{eng['name']}/roles/{rol}:credentials", json={})
        await asyncio.sleep(4)  # the other lease expires meanwhile
        # never marked ended before the target confirms: both users still exist
        assert await lease_status(api, revoked["lease_id"]) == "revoking"
        assert await lease_status(api, expiring["lease_id"]) == "revoking"
        assert await pg_role_exists(revoked["data"]["username"])
        assert await pg_role_exists(expiring["data"]["username"])
        await proxy.start()  # the target is back on the same address
        await wait_until_async(lambda: lease_status(api, revoked["lease_id"]), "revoked", timeout=40)
        await wait_until_async(lambda: lease_status(api, expiring["lease_id"]), "expired", timeout=40)
        assert not await pg_role_exists(revoked["data"]["username"])
        assert not await pg_role_exists(expiring["data"]["username"])
        status, page, _ = await api.request("GET", f"/v1/leases?engine={eng['name']}")
        assert status == 200 and len(page["items"]) == 2  # the credentials that failed left no lease
    finally:
        await proxy.stop()


# -- tenants, narrow identities, scopes --------------------------------------------------------------------

async def test_another_tenant_sees_nothing_and_can_touch_nothing(api: Api, rds: dict[str, Any]) -> None:
    eng = await engine(api, "redis", rds)
    rol = await role(api, eng["name"], {"acl_rules": ["+ping"]})
    lease = await creds(api, eng["name"], rol)
    status, other, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    stranger = await identity(api, ["leases"], [allow(["**"], LEASES_ALL)], tenant=other["id"])
    token = stranger["token"]
    await expect(api, "engine_not_found", "GET", f"/v1/engines/{eng['name']}", token=token)
    await expect(api, "engine_not_found", "PATCH", f"/v1/engines/{eng['name']}", token=token,
                 json={"rotate_admin_password": True})
    await expect(api, "engine_not_found", "DELETE", f"/v1/engines/{eng['name']}", token=token)
    await expect(api, "engine_not_found", "POST", f"/v1/engines/{eng['name']}/roles/{rol}:credentials",
                 token=token, json={})
    await expect(api, "engine_not_found", "POST", "/v1/leases:revoke-prefix", token=token,
                 json={"engine": eng["name"]})
    for method, suffix in (("GET", ""), ("POST", ":renew"), ("POST", ":revoke")):
        await expect(api, "lease_not_found", method, f"/v1/leases/{lease['lease_id']}{suffix}", token=token,
                     **({"json": {}} if method == "POST" else {}))
    for path in ("/v1/engines", "/v1/leases"):
        status, page, _ = await api.request("GET", path, token=token)
        assert status == 200 and page["items"] == []
    assert await lease_status(api, lease["lease_id"]) == "active"  # untouched
    assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204


async def test_a_narrow_identity_gets_credentials_from_its_role_only(api: Api, rds: dict[str, Any]) -> None:
    eng = await engine(api, "redis", rds)
    mine = await role(api, eng["name"], {"acl_rules": ["+ping"]})
    theirs = await role(api, eng["name"], {"acl_rules": ["+@read", "~*"]})
    other_lease = await creds(api, eng["name"], theirs)
    helpdesk = await identity(api, ["leases"], [allow([f"engines/{eng['name']}/roles/{mine}"],
                                                      ["read", "list", "issue", "revoke"])])
    token = helpdesk["token"]
    status, lease, _ = await api.request("POST", f"/v1/engines/{eng['name']}/roles/{mine}:credentials",
                                         token=token, json={})
    assert status == 201
    remember_secret(lease["data"]["password"])
    await expect(api, "access_denied", "POST", f"/v1/engines/{eng['name']}/roles/{theirs}:credentials",
                 token=token, json={})
    await expect(api, "access_denied", "PUT", f"/v1/engines/{eng['name']}/roles/{mine}", token=token,
                 json={"acl_rules": ["+@read", "~*"]})  # may not widen its own role
    await expect(api, "access_denied", "GET", f"/v1/engines/{eng['name']}", token=token)
    await expect(api, "access_denied", "PATCH", f"/v1/engines/{eng['name']}", token=token,
                 json={"rotate_admin_password": True})
    await expect(api, "access_denied", "POST", "/v1/engines", token=token, json={
        "name": name("e"), "type": "redis", "config": rds})
    await expect(api, "access_denied", "POST", "/v1/leases:revoke-prefix", token=token,
                 json={"engine": eng["name"]})
    await expect(api, "access_denied", "POST", f"/v1/leases/{lease['lease_id']}:renew", token=token, json={})
    status, got, _ = await api.request("GET", f"/v1/leases/{lease['lease_id']}", token=token)
    assert status == 200 and got["role"] == mine  # through its role
    await expect(api, "lease_not_found", "GET", f"/v1/leases/{other_lease['lease_id']}", token=token)
    await expect(api, "lease_not_found", "POST", f"/v1/leases/{other_lease['lease_id']}:revoke", token=token)
    status, page, _ = await api.request("GET", f"/v1/leases?engine={eng['name']}", token=token)
    assert status == 200 and [x["id"] for x in page["items"]] == [lease["lease_id"]]
    status, body, _ = await api.request("POST", "/v1/leases:revoke-prefix", token=token,
                                        json={"engine": eng["name"], "role": mine})
    assert status == 202 and body == {"revoking": 1}
    assert await lease_status(api, other_lease["lease_id"]) == "active"
    no_scope = await identity(api, ["secrets:read"], [allow(["**"], LEASES_ALL)])
    await expect(api, "insufficient_scope", "GET", "/v1/leases", token=no_scope["token"])
    await expect(api, "insufficient_scope", "POST", f"/v1/engines/{eng['name']}/roles/{mine}:credentials",
                 token=no_scope["token"], json={})
    assert (await api.request("POST", f"/v1/leases/{other_lease['lease_id']}:revoke"))[0] == 204


async def test_a_deleted_tenant_has_its_users_removed_from_the_targets(
        api: Api, platform: Platform, pg_dsn: str, pg: dict[str, Any]) -> None:
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    there = {"X-Tenant-ID": tenant["id"]}
    eng = await engine(api, "postgresql", pg_config(pg), headers=there)
    status, _, _ = await api.request("PUT", f"/v1/engines/{eng['name']}/roles/app", headers=there,
                                     json={"creation_statements": pg_role_statements(pg["schema"])})
    assert status == 201
    status, lease, _ = await api.request("POST", f"/v1/engines/{eng['name']}/roles/app:credentials", headers=there,
                                         json={})
    assert status == 201
    remember_secret(lease["data"]["password"])
    session = await pg_connect(lease["data"]["username"], lease["data"]["password"])
    assert (await api.request("DELETE", f"/v1/tenants/{tenant['id']}"))[0] == 204

    async def engines_left() -> int:
        rows = await schema_rows(platform, pg_dsn, "SELECT count(*) AS n FROM {schema}.engines"
                                                   " WHERE tenant_id = $1", tenant["id"])
        return int(rows[0]["n"])
    await wait_until_async(engines_left, 0, timeout=30)
    assert not await pg_role_exists(lease["data"]["username"])
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError)):
        await session.fetchval("SELECT 1")
    assert not await schema_rows(platform, pg_dsn, "SELECT 1 FROM {schema}.leases WHERE tenant_id = $1",
                                 tenant["id"])


async def test_no_admin_or_leased_password_is_stored_in_clear_or_published(
        api: Api, platform: Platform, pg_dsn: str, pg: dict[str, Any]) -> None:
    eng, rol = await pg_engine_and_role(api, pg)
    lease = await creds(api, eng, rol)
    assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:renew", json={}))[0] == 200
    assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204
    secrets_seen = (pg["password"], lease["data"]["password"])
    engines = await schema_rows(platform, pg_dsn, "SELECT config::text AS config, ciphertext FROM {schema}.engines"
                                                  " WHERE name = $1", eng)
    assert engines and all(s not in engines[0]["config"] and s.encode() not in engines[0]["ciphertext"]
                           for s in secrets_seen)
    events = await schema_rows(platform, pg_dsn, "SELECT data::text AS data FROM {schema}.outbox")
    mine = [e["data"] for e in events if lease["lease_id"] in e["data"]]
    assert len(mine) >= 3  # created, renewed, revoked
    assert not any(s in e for e in mine for s in (*secrets_seen, lease["data"]["username"]))
    leases = await schema_rows(platform, pg_dsn, "SELECT row_to_json(l)::text AS row FROM {schema}.leases l"
                                                 " WHERE id = $1", lease["lease_id"])
    assert lease["data"]["password"] not in leases[0]["row"]
