"""Dynamic credentials through the gateway (api.md §7), judged by the real targets.

Every test runs on the in-process bus and on RabbitMQ. Users appear in and
disappear from this machine's PostgreSQL (a cluster with password
authentication, so passwords are really checked), Redis and RabbitMQ; a
session opened with leased credentials is ended by revocation and expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
from redis import exceptions as rx

from services.platform import Platform
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import name
from tests.e2e.lease_targets import (
    RABBIT_AMQP,
    pg_admin,
    pg_connect,
    pg_role_exists,
    pg_role_statements,
    rabbit,
    rabbit_admin,
    rabbit_login_works,
    redis_admin,
    redis_as,
)
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.integration.test_bus_contract import wait_until_async


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def rmq() -> AsyncIterator[dict[str, Any]]:
    async with rabbit_admin() as admin:
        yield admin


async def engine(api: Api, kind: str, config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    status, body, _ = await api.request("POST", "/v1/engines", json={
        "name": name(kind[:5]), "type": kind, "config": config}, **extra)
    assert status == 201, body
    return dict(body)


async def role(api: Api, engine_name: str, body: dict[str, Any]) -> str:
    role_name = name("r")
    status, answer, _ = await api.request("PUT", f"/v1/engines/{engine_name}/roles/{role_name}", json=body)
    assert status == 201, answer
    return role_name


async def creds(api: Api, engine_name: str, role_name: str, **body: Any) -> dict[str, Any]:
    status, answer, _ = await api.request("POST", f"/v1/engines/{engine_name}/roles/{role_name}:credentials",
                                          json=body)
    assert status == 201, answer
    remember_secret(answer["data"]["password"])
    return dict(answer)


async def lease_status(api: Api, lease_id: str) -> str:
    status, body, _ = await api.request("GET", f"/v1/leases/{lease_id}")
    assert status == 200, body
    return str(body["status"])


def pg_config(pg: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"connection_url": pg["url"], **extra}


async def pg_engine_and_role(api: Api, pg: dict[str, Any], **role_extra: Any) -> tuple[str, str]:
    eng = await engine(api, "postgresql", pg_config(pg))
    return eng["name"], await role(api, eng["name"], {
        "creation_statements": pg_role_statements(pg["schema"]), **role_extra})


# -- PostgreSQL -------------------------------------------------------------------------------------

async def test_postgres_user_works_at_once_and_revocation_ends_its_session(api: Api, pg: dict[str, Any]) -> None:
    eng, rol = await pg_engine_and_role(api, pg)
    lease = await creds(api, eng, rol, ttl="10m")
    assert lease["lease_id"].startswith("lea_") and lease["lease_duration"] == 600 and lease["renewable"]
    user, password = lease["data"]["username"], lease["data"]["password"]
    session = await pg_connect(user, password)  # a real password check (SCRAM)
    assert await session.fetchval("SELECT current_user") == user
    # the user owns a table: revocation must still drop it cleanly
    await session.execute(f"CREATE TABLE {pg['schema']}.owned_{user[-6:]} (id int)")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await pg_connect(user, password + "x")

    status, _, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke")
    assert status == 204
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError)):
        await session.fetchval("SELECT 1")  # the open session was terminated
    assert not await pg_role_exists(user)
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await pg_connect(user, password)
    assert await lease_status(api, lease["lease_id"]) == "revoked"
    # revoking again is a no-op
    status, _, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke")
    assert status == 204


async def test_postgres_engine_uses_tls_when_asked(api: Api, pg: dict[str, Any]) -> None:
    conn = await asyncpg.connect(user=pg["user"], password=pg["password"], host="127.0.0.1", port=pg["port"],
                                 database="postgres", ssl=False)
    try:
        for sslmode, encrypted in (("require", True), ("disable", False)):
            eng = await engine(api, "postgresql", pg_config(pg, sslmode=sslmode))
            rol = await role(api, eng["name"], {"creation_statements": pg_role_statements(pg["schema"])})
            await creds(api, eng["name"], rol)
            seen = await conn.fetch(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                " WHERE a.application_name = 'coffer-lease' AND a.usename = $1", pg["user"])
            assert seen and any(r["ssl"] is encrypted for r in seen), (sslmode, seen)
            status, _, _ = await api.request("POST", "/v1/leases:revoke-prefix", json={"engine": eng["name"]})
            assert status == 202
            await wait_until_async(lambda e=eng["name"]: _none_active(api, e), True, timeout=15)
            assert (await api.request("DELETE", f"/v1/engines/{eng['name']}"))[0] == 204
    finally:
        await conn.close()


async def _none_active(api: Api, engine_name: str) -> bool:
    status, page, _ = await api.request("GET", f"/v1/leases?engine={engine_name}")
    return status == 200 and all(item["status"] in ("revoked", "expired") for item in page["items"])


# -- Redis --------------------------------------------------------------------------------------------

async def test_redis_user_can_do_what_its_acl_allows_and_nothing_else(api: Api, rds: dict[str, Any]) -> None:
    eng = await engine(api, "redis", rds)
    rol = await role(api, eng["name"], {"acl_rules": ["~app:*", "+get", "+set", "+ping"], "default_ttl": "5m"})
    lease = await creds(api, eng["name"], rol)
    client = redis_as(lease["data"]["username"], lease["data"]["password"])
    try:
        assert await client.set("app:greeting", "hello")
        assert await client.get("app:greeting") == "hello"
        with pytest.raises(rx.NoPermissionError):
            await client.set("other:key", "x")
        with pytest.raises(rx.NoPermissionError):
            await client.flushall()
        status, _, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke")
        assert status == 204
        with pytest.raises(rx.ConnectionError):
            await client.ping()  # its connection was killed
    finally:
        await client.aclose()
    fresh = redis_as(lease["data"]["username"], lease["data"]["password"])
    try:
        with pytest.raises(rx.AuthenticationError, match="(?i)wrongpass|invalid username-password"):
            await fresh.ping()
    finally:
        await fresh.aclose()


# -- RabbitMQ ------------------------------------------------------------------------------------------

async def test_rabbitmq_user_connects_and_revocation_closes_its_connection(api: Api, rmq: dict[str, Any]) -> None:
    config = {k: rmq[k] for k in ("management_url", "username", "password")}
    eng = await engine(api, "rabbitmq", config)
    rol = await role(api, eng["name"], {"vhosts": {rmq["vhost"]: {"configure": ".*", "write": ".*", "read": ".*"}},
                                        "tags": []})
    lease = await creds(api, eng["name"], rol)
    user, password = lease["data"]["username"], lease["data"]["password"]
    connection = await aio_pika.connect(RABBIT_AMQP.format(user=user, password=password, vhost=rmq["vhost"]),
                                        fail_fast=True)
    channel = await connection.channel()
    await channel.declare_queue("leased", auto_delete=True)
    assert rabbit_login_works(user, password)

    status, _, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke")
    assert status == 204
    with pytest.raises(Exception):  # noqa: B017 - the connection is gone, whichever way aio-pika says it
        async with asyncio.timeout(10):
            await channel.declare_queue("after-revoke", auto_delete=True)
    assert not rabbit_login_works(user, password)
    await connection.close()


# -- leases: renew, expiry, lists, revoke-prefix ------------------------------------------------------------

async def test_expiry_removes_the_user_and_ends_its_session(api: Api, pg: dict[str, Any]) -> None:
    eng, rol = await pg_engine_and_role(api, pg, default_ttl="2s", max_ttl="1h")
    lease = await creds(api, eng, rol)
    session = await pg_connect(lease["data"]["username"], lease["data"]["password"])
    assert lease["lease_duration"] == 2
    await wait_until_async(lambda: lease_status(api, lease["lease_id"]), "expired", timeout=20)
    ended = time.time()
    assert ended - datetime.fromisoformat(lease["expires_at"]).timestamp() < 15
    assert not await pg_role_exists(lease["data"]["username"])
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError, OSError)):
        await session.fetchval("SELECT 1")
    status, body, headers = await api.request("POST", f"/v1/leases/{lease['lease_id']}:renew", json={})
    err = assert_envelope(status, body, headers, "lease_expired")
    assert err["details"] == {"id": lease["lease_id"], "status": "expired"}


async def test_renew_extends_up_to_max_expires_at(api: Api, rds: dict[str, Any]) -> None:
    eng = await engine(api, "redis", rds)
    rol = await role(api, eng["name"], {"acl_rules": ["+ping"], "default_ttl": "1m", "max_ttl": "10m"})
    lease = await creds(api, eng["name"], rol, ttl="30s")
    assert lease["lease_duration"] == 30
    status, renewed, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:renew", json={"increment": "5m"})
    assert status == 200 and renewed["status"] == "active"
    assert 290 <= (datetime.fromisoformat(renewed["expires_at"])
                   - datetime.fromisoformat(renewed["issued_at"])).total_seconds() <= 310
    status, renewed, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:renew", json={"increment": "99h"})
    assert status == 200 and renewed["expires_at"] == renewed["max_expires_at"]
    status, renewed, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:renew")  # the role's default
    assert status == 200
    # :revoke takes no body, or {}: anything else is refused, and the lease stays (make fuzz found it ignored)
    for bad, code in ((b"true", "invalid_request"), (b"\x00", "invalid_request"), (b'{"increment": "1m"}',
                                                                                   "validation_error")):
        status, body, headers = await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke", data=bad,
                                                  headers={"Content-Type": "application/json"})
        assert_envelope(status, body, headers, code)
    status, still, _ = await api.request("GET", f"/v1/leases/{lease['lease_id']}")
    assert status == 200 and still["status"] == "active", still
    status, _, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke", json={})
    assert status == 204
    status, body, headers = await api.request("POST", f"/v1/leases/{lease['lease_id']}:renew", json={})
    assert assert_envelope(status, body, headers, "lease_expired")["details"]["status"] == "revoked"


async def test_list_filters_pages_and_revoke_prefix(api: Api, rds: dict[str, Any]) -> None:
    eng = await engine(api, "redis", rds)
    first = await role(api, eng["name"], {"acl_rules": ["+ping"]})
    second = await role(api, eng["name"], {"acl_rules": ["+ping"]})
    made = [await creds(api, eng["name"], first) for _ in range(3)] + [await creds(api, eng["name"], second)]
    seen: list[str] = []
    cursor = None
    while True:
        path = f"/v1/leases?engine={eng['name']}&role={first}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.request("GET", path)
        assert status == 200, page
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(m["lease_id"] for m in made[:3])
    status, body, _ = await api.request("POST", "/v1/leases:revoke-prefix", json={"engine": eng["name"],
                                                                                 "role": first})
    assert status == 202 and body == {"revoking": 3}
    for made_lease in made[:3]:
        await wait_until_async(lambda m=made_lease: lease_status(api, m["lease_id"]), "revoked", timeout=15)
    assert await lease_status(api, made[3]["lease_id"]) == "active"
    status, body, headers = await api.request("DELETE", f"/v1/engines/{eng['name']}")
    assert assert_envelope(status, body, headers, "engine_in_use")["details"]["leases"] == 1
    status, body, _ = await api.request("POST", "/v1/leases:revoke-prefix", json={"engine": eng["name"]})
    assert status == 202 and body == {"revoking": 1}
    await wait_until_async(lambda: lease_status(api, made[3]["lease_id"]), "revoked", timeout=15)
    assert (await api.request("DELETE", f"/v1/engines/{eng['name']}"))[0] == 204
    status, body, headers = await api.request("GET", f"/v1/engines/{eng['name']}")
    assert_envelope(status, body, headers, "engine_not_found")


# -- engines: what is shown, admin rotation ------------------------------------------------------------------

async def test_engine_never_shows_its_admin_password(api: Api, pg: dict[str, Any], rds: dict[str, Any],
                                                     rmq: dict[str, Any]) -> None:
    made = [await engine(api, "postgresql", pg_config(pg)), await engine(api, "redis", rds),
            await engine(api, "rabbitmq", {k: rmq[k] for k in ("management_url", "username", "password")})]
    status, page, _ = await api.request("GET", "/v1/engines?limit=1000")
    assert status == 200
    listed = {e["name"]: e for e in page["items"]}
    for eng, password in zip(made, (pg["password"], rds["password"], rmq["password"]), strict=True):
        status, got, _ = await api.request("GET", f"/v1/engines/{eng['name']}")
        assert status == 200 and got == eng == listed[eng["name"]]
        assert password not in str(got) and "password" not in got["config"]
        assert got["admin_rotated_at"] is None
    assert made[0]["config"]["connection_url"] == f"postgresql://{pg['user']}@127.0.0.1:{pg['port']}/postgres"


@pytest.mark.parametrize("kind", ["postgresql", "redis", "rabbitmq"])
async def test_admin_password_rotation_leaves_no_one_knowing_it(api: Api, kind: str) -> None:
    admins = {"postgresql": pg_admin, "redis": redis_admin, "rabbitmq": rabbit_admin}
    async with admins[kind]() as admin:
        if kind == "postgresql":
            config, body = pg_config(admin), {"creation_statements": pg_role_statements(admin["schema"])}
        elif kind == "redis":
            config, body = admin, {"acl_rules": ["+ping"]}
        else:
            config = {k: admin[k] for k in ("management_url", "username", "password")}
            body = {"vhosts": {admin["vhost"]: {"read": ".*"}}}
        eng = await engine(api, kind, config)
        rol = await role(api, eng["name"], body)
        status, patched, _ = await api.request("PATCH", f"/v1/engines/{eng['name']}",
                                               json={"rotate_admin_password": True})
        assert status == 200 and patched["admin_rotated_at"] is not None, patched
        assert not await _admin_password_works(kind, admin)  # the old password is dead
        lease = await creds(api, eng["name"], rol)  # the engine works with the one only it knows
        status, _, _ = await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke")
        assert status == 204
        await _restore_admin(kind, admin)  # so the helper's teardown can log in


async def _admin_password_works(kind: str, admin: dict[str, Any]) -> bool:
    try:
        if kind == "postgresql":
            await (await asyncpg.connect(admin["url"], ssl="require")).close()
        elif kind == "redis":
            client = redis_as(admin["username"], admin["password"])
            try:
                await client.ping()
            finally:
                await client.aclose()
        else:
            return rabbit_login_works(admin["username"], admin["password"])
        return True
    except Exception:  # noqa: BLE001 - refused, whichever way the target says it
        return False


async def _restore_admin(kind: str, admin: dict[str, Any]) -> None:
    if kind == "postgresql":
        conn = await asyncpg.connect(pg_admin_root_url(), ssl=False)
        await conn.execute(f"ALTER ROLE {admin['user']} PASSWORD '{admin['password']}'")
        await conn.close()
    elif kind == "rabbitmq":
        await rabbit("PUT", f"/api/users/{admin['username']}", {"password": admin["password"], "tags": "administrator"})


def pg_admin_root_url() -> str:
    from tests.e2e.lease_targets import LEASE_PG
    return LEASE_PG
