"""Engines can't mint administrators, and can't tell a closed port from an open one (issue #27, findings 2,
6 and 7), through the gateway.

- a PostgreSQL admin that is a superuser, or holds (directly or through other roles) a superuser role or
  ``pg_execute_server_program`` / ``pg_read_server_files`` / ``pg_write_server_files``, is refused: at
  create, at every rotation, and at every lease (also when the creation statements grant those);
- RabbitMQ tags only from ``COFFER_ENGINE_RABBITMQ_TAGS`` (none by default), at the role and at the lease;
- Redis roles grant no ``@admin`` / ``@dangerous`` command in any spelling unless ``COFFER_ENGINE_REDIS_ALLOW``
  says so, and leased users lose them in the target whatever their categories overlap;
- nothing listening, a silent listener and another server read alike: ``engine_unreachable``, one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from redis import exceptions as rx

from services.platform import Platform
from tests.conftest import LOG_LINES, Api, free_port, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import name
from tests.e2e.lease_targets import (
    LEASE_PG,
    pg_admin,
    pg_connect,
    pg_role_exists,
    pg_role_statements,
    rabbit,
    rabbit_admin,
    redis_as,
)
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_leases import creds, engine, pg_config, role
from tests.e2e.test_leases_security import schema_rows

TOO_POWERFUL = "the admin role is too powerful: superuser or server-file/program roles are not allowed"


async def expect(api: Api, code: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, body, headers = await api.request(method, path, **kwargs)
    return assert_envelope(status, body, headers, code)


async def as_postgres(*statements: str) -> None:
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()




@pytest.fixture(scope="module")
async def rmq() -> AsyncIterator[dict[str, Any]]:
    async with rabbit_admin() as admin:
        yield admin


def rabbit_config(admin: dict[str, Any]) -> dict[str, Any]:
    return {k: admin[k] for k in ("management_url", "username", "password")}


@pytest.fixture(scope="module")
async def widened(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str,
                  http: aiohttp.ClientSession) -> AsyncIterator[tuple[Api, Platform]]:
    """A platform whose operator allows the ``management`` tag and Redis's ``config`` command."""
    async with own_platform("embedded", tmp_path_factory.mktemp("widened"), pg_dsn,
                            engine_rabbitmq_tags="management", engine_redis_allow="config") as p:
        yield await initialised(p, http), p


# -- PostgreSQL: the admin ------------------------------------------------------------------------------------

async def test_a_postgresql_target_older_than_16_is_refused_unless_the_operator_accepts_it(
        tmp_path_factory: pytest.TempPathFactory, pg_dsn: str, http: aiohttp.ClientSession) -> None:
    """Before 16, CREATEROLE may grant itself pg_execute_server_program inside one of the tenant's statements
    (a DO block), before any guard sees it: such targets are refused by default. (The suite's platforms
    accept them: this machine's lease cluster may be older.)"""
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    try:
        version = int(await conn.fetchval("SHOW server_version_num"))
    finally:
        await conn.close()
    async with own_platform("embedded", tmp_path_factory.mktemp("pg16"), pg_dsn,
                            engine_postgresql_legacy=False) as p, pg_admin() as admin:
        api = await initialised(p, http)
        body = {"name": name("pg"), "type": "postgresql", "config": pg_config(admin)}
        if version < 160000:
            err = await expect(api, "invalid_config", "POST", "/v1/engines", json=body)
            assert "PostgreSQL 16 or newer is required" in err["message"], err
            assert admin["password"] not in str(err)
            assert not await schema_rows(p, pg_dsn, "SELECT 1 FROM {schema}.engines WHERE name = $1", body["name"])
        else:
            status, made, _ = await api.request("POST", "/v1/engines", json=body)
            assert status == 201, made


async def test_a_postgresql_admin_that_is_a_superuser_or_holds_server_roles_is_refused(
        api: Api, platform: Platform, pg_dsn: str, pg: dict[str, Any]) -> None:
    # postgres, the cluster's superuser, with its right password
    remember_secret(LEASE_PG.split(":")[2].split("@")[0])
    err = await expect(api, "invalid_config", "POST", "/v1/engines", json={
        "name": name("super"), "type": "postgresql", "config": {"connection_url": LEASE_PG}})
    assert TOO_POWERFUL in err["message"] and "coffer-leases-test" not in repr(err)
    boss, middle = f"coffer_boss_{secrets.token_hex(3)}", f"coffer_mid_{secrets.token_hex(3)}"
    await as_postgres(f"CREATE ROLE {boss} NOLOGIN SUPERUSER", f"CREATE ROLE {middle} NOLOGIN",
                      f"GRANT pg_read_server_files TO {middle}")
    try:
        # each of the roles directly; a superuser role; a server-file role through a role in between
        for grant in ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files", boss, middle):
            async with pg_admin() as admin:
                await as_postgres(f"GRANT {grant} TO {admin['user']}")
                err = await expect(api, "invalid_config", "POST", "/v1/engines", json={
                    "name": name("strong"), "type": "postgresql", "config": pg_config(admin)})
                assert TOO_POWERFUL in err["message"] and admin["password"] not in repr(err), (grant, err)
    finally:
        await as_postgres(f"DROP ROLE {boss}", f"DROP ROLE {middle}")
    assert not await schema_rows(platform, pg_dsn, "SELECT 1 FROM {schema}.engines WHERE name LIKE 'super-%'"
                                                 " OR name LIKE 'strong-%'")
    assert (await engine(api, "postgresql", pg_config(pg)))["type"] == "postgresql"  # CREATEROLE, no more: fine


async def test_rotation_and_leases_refuse_an_admin_made_superuser_after_the_engine(api: Api) -> None:
    async with pg_admin() as admin:
        eng = await engine(api, "postgresql", pg_config(admin))
        rol = await role(api, eng["name"], {"creation_statements": pg_role_statements(admin["schema"])})
        await as_postgres(f"ALTER ROLE {admin['user']} SUPERUSER")
        try:
            err = await expect(api, "invalid_config", "PATCH", f"/v1/engines/{eng['name']}",
                               json={"rotate_admin_password": True})
            assert TOO_POWERFUL in err["message"] and admin["password"] not in repr(err)
            await (await pg_connect(admin["user"], admin["password"])).close()  # its password is unchanged
            err = await expect(api, "invalid_config", "POST", f"/v1/engines/{eng['name']}/roles/{rol}:credentials",
                               json={})
            assert TOO_POWERFUL in err["message"]
            await as_postgres(f"ALTER ROLE {admin['user']} NOSUPERUSER; GRANT pg_write_server_files TO"
                              f" {admin['user']}")
            await expect(api, "invalid_config", "PATCH", f"/v1/engines/{eng['name']}",
                         json={"rotate_admin_password": True})
        finally:
            await as_postgres(f"ALTER ROLE {admin['user']} NOSUPERUSER",
                              f"REVOKE pg_write_server_files FROM {admin['user']}")
        lease = await creds(api, eng["name"], rol)  # an ordinary admin again: leases work
        assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204
        assert (await api.request("DELETE", f"/v1/engines/{eng['name']}"))[0] == 204


async def test_creation_statements_may_not_make_the_admin_or_the_user_powerful(
        api: Api, platform: Platform, pg_dsn: str, pg: dict[str, Any]) -> None:
    """On PostgreSQL 15 a CREATEROLE admin may grant these roles: the guard after the statements rolls the
    whole creation back, and the next request finds the admin as it was."""
    eng = await engine(api, "postgresql", pg_config(pg))
    user_grant = await role(api, eng["name"], {"creation_statements": [
        *pg_role_statements(pg["schema"]), 'GRANT pg_read_server_files TO "{{name}}"']})
    self_grant = await role(api, eng["name"], {"creation_statements": [
        "GRANT pg_execute_server_program TO CURRENT_USER", *pg_role_statements(pg["schema"])]})
    # a role that tries to neutralise the guard after it: an open quote, a comment, a dollar quote
    for tail in ("SELECT '", "SELECT 1 /*", "SELECT $x$", 'SELECT "'):
        sneaky = await role(api, eng["name"], {"creation_statements": [
            *pg_role_statements(pg["schema"]), 'GRANT pg_read_server_files TO "{{name}}"', tail]})
        err = await expect(api, "invalid_role", "POST", f"/v1/engines/{eng['name']}/roles/{sneaky}:credentials",
                           json={})
        assert err["details"]["sqlstate"] == "42601", err  # the whole message failed to parse: nothing ran
    # the grant, then a program run with it, in the next template: the guard between them stops it
    probe = f"/tmp/coffer-lease-probe-{secrets.token_hex(4)}"
    program = await role(api, eng["name"], {"creation_statements": [
        *pg_role_statements(pg["schema"]), "GRANT pg_execute_server_program TO CURRENT_USER",
        f"COPY (SELECT 1) TO PROGRAM 'touch {probe}'"]})
    err = await expect(api, "invalid_config", "POST", f"/v1/engines/{eng['name']}/roles/{program}:credentials",
                       json={})
    assert TOO_POWERFUL in err["message"] and not await asyncio.to_thread(os.path.exists, probe)
    err = await expect(api, "invalid_role", "POST", f"/v1/engines/{eng['name']}/roles/{user_grant}:credentials",
                       json={})
    assert "server-file/program" in err["message"] and err["details"] == {"engine": eng["name"]}
    err = await expect(api, "invalid_config", "POST", f"/v1/engines/{eng['name']}/roles/{self_grant}:credentials",
                       json={})
    assert TOO_POWERFUL in err["message"]
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    try:
        for rol in (user_grant, self_grant):
            assert not await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", f"v-{rol}-%")
        assert not await conn.fetchval("SELECT pg_has_role($1::name, 'pg_execute_server_program', 'MEMBER')",
                                       pg["user"])
    finally:
        await conn.close()
    assert not await schema_rows(platform, pg_dsn, "SELECT 1 FROM {schema}.leases WHERE engine = $1", eng["name"])
    lease = await creds(api, eng["name"], await role(api, eng["name"], {
        "creation_statements": pg_role_statements(pg["schema"])}))
    assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204


async def test_revocation_statements_are_held_to_the_same_line(api: Api, pg: dict[str, Any]) -> None:
    eng = await engine(api, "postgresql", pg_config(pg))
    probe = f"/tmp/coffer-lease-probe-{secrets.token_hex(4)}"
    ordinary = await role(api, eng["name"], {
        "creation_statements": pg_role_statements(pg["schema"]),
        "revocation_statements": [f'REVOKE ALL ON SCHEMA {pg["schema"]} FROM "{{{{name}}}}"']})
    hostile = await role(api, eng["name"], {
        "creation_statements": pg_role_statements(pg["schema"]),
        "revocation_statements": ['REVOKE ALL ON SCHEMA public FROM "{{name}}"',
                                  "GRANT pg_execute_server_program TO CURRENT_USER",
                                  f"COPY (SELECT 1) TO PROGRAM 'touch {probe}'"]})
    for rol in (ordinary, hostile):
        lease = await creds(api, eng["name"], rol)
        assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204
        assert not await pg_role_exists(lease["data"]["username"])  # the user is gone either way
    assert not await asyncio.to_thread(os.path.exists, probe)
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    try:
        assert not await conn.fetchval("SELECT pg_has_role($1::name, 'pg_execute_server_program', 'MEMBER')",
                                       pg["user"])
    finally:
        await conn.close()


# -- RabbitMQ: tags ----------------------------------------------------------------------------------------------

async def test_rabbitmq_roles_get_only_the_tags_the_operator_allows(
        api: Api, platform: Platform, pg_dsn: str, rmq: dict[str, Any],
        widened: tuple[Api, Platform]) -> None:
    eng = await engine(api, "rabbitmq", rabbit_config(rmq))
    vhosts = {rmq["vhost"]: {"configure": "", "write": ".*", "read": ".*"}}
    for tags in (["administrator"], ["management"], ["monitoring", "policymaker"]):
        err = await expect(api, "invalid_role", "PUT", f"/v1/engines/{eng['name']}/roles/{name('r')}",
                           json={"vhosts": vhosts, "tags": tags})
        assert err["details"] == {"field": "tags"}, err
    # a role written before the operator narrowed the list (its row changed here): refused at the lease
    rol = await role(api, eng["name"], {"vhosts": vhosts, "tags": []})
    await schema_rows(platform, pg_dsn, "UPDATE {schema}.roles SET spec = jsonb_set(spec, '{tags}',"
                                      " '[\"administrator\"]') WHERE engine = $1 AND name = $2", eng["name"], rol)
    err = await expect(api, "invalid_role", "POST", f"/v1/engines/{eng['name']}/roles/{rol}:credentials", json={})
    assert err["details"] == {"field": "tags"}
    assert not [u for u in await rabbit("GET", "/api/users") if u["name"].startswith(f"v-{rol}-")]
    assert not await schema_rows(platform, pg_dsn, "SELECT 1 FROM {schema}.leases WHERE engine = $1", eng["name"])

    # where the operator allows "management": that tag and no other
    wide, _ = widened
    eng = await engine(wide, "rabbitmq", rabbit_config(rmq))
    await expect(wide, "invalid_role", "PUT", f"/v1/engines/{eng['name']}/roles/{name('r')}",
                 json={"vhosts": vhosts, "tags": ["management", "administrator"]})
    rol = await role(wide, eng["name"], {"vhosts": vhosts, "tags": ["management"]})
    lease = await creds(wide, eng["name"], rol)
    user = await rabbit("GET", f"/api/users/{lease['data']['username']}")
    assert user["tags"] == ["management"]
    assert (await wide.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204


# -- Redis: administration ----------------------------------------------------------------------------------------

async def test_redis_roles_grant_no_administration_unless_the_operator_allows_it(
        api: Api, platform: Platform, pg_dsn: str, rds: dict[str, Any],
        widened: tuple[Api, Platform]) -> None:
    eng = await engine(api, "redis", rds)
    for rule in ("+@all", "allcommands", "ALLCOMMANDS", "+@admin", "+@DANGEROUS", "+acl", "+ACL|LIST", "+config",
                 "+Config|Set", "+module", "+debug", "+client|kill", "+keys", "(+@all)"):
        err = await expect(api, "invalid_role", "PUT", f"/v1/engines/{eng['name']}/roles/{name('r')}",
                           json={"acl_rules": ["~*", "&*", rule]})
        assert err["details"] == {"field": "acl_rules"}, (rule, err)
    # categories that overlap @admin/@dangerous grant none of their commands in the target
    rol = await role(api, eng["name"], {"acl_rules": ["~*", "+@slow", "+@read", "+@connection"]})
    lease = await creds(api, eng["name"], rol)
    leased = redis_as(lease["data"]["username"], lease["data"]["password"])
    try:
        assert await leased.execute_command("TYPE", "nothing-here") == "none"  # @read works
        for command in (("CONFIG", "GET", "maxmemory"), ("ACL", "LIST"), ("ACL", "SETUSER", "x"), ("KEYS", "*"),
                        ("CLIENT", "LIST"), ("MODULE", "LIST")):
            with pytest.raises(rx.NoPermissionError):
                await leased.execute_command(*command)
    finally:
        await leased.aclose()
    assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204
    # a stored role that grants more than the operator allows now: refused at the lease, no user made
    await schema_rows(platform, pg_dsn, "UPDATE {schema}.roles SET spec = jsonb_set(spec, '{acl_rules}',"
                                      " '[\"+@all\", \"~*\"]') WHERE engine = $1 AND name = $2", eng["name"], rol)
    await expect(api, "invalid_role", "POST", f"/v1/engines/{eng['name']}/roles/{rol}:credentials", json={})

    # where the operator allows "config": CONFIG, and nothing else of @admin
    wide, _ = widened
    eng = await engine(wide, "redis", rds)
    await expect(wide, "invalid_role", "PUT", f"/v1/engines/{eng['name']}/roles/{name('r')}",
                 json={"acl_rules": ["+config|get", "+acl|list"]})
    rol = await role(wide, eng["name"], {"acl_rules": ["~*", "+config|get", "+@slow"]})
    lease = await creds(wide, eng["name"], rol)
    leased = redis_as(lease["data"]["username"], lease["data"]["password"])
    try:
        assert await leased.execute_command("CONFIG", "GET", "maxmemory")
        for command in (("CONFIG", "SET", "maxmemory", "0"), ("ACL", "LIST")):
            with pytest.raises(rx.NoPermissionError):
                await leased.execute_command(*command)
    finally:
        await leased.aclose()
    assert (await wide.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] == 204


# -- one answer for closed, silent and other ports ------------------------------------------------------------

@contextlib.asynccontextmanager
async def listener(answer: bytes | None) -> AsyncIterator[int]:
    """127.0.0.1:<port> that says ``answer`` to whatever comes and closes, or (``None``) never says anything."""
    held: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer is None:
            held.append(writer)
            return
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1024), 1)
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


HTTP_405 = (b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\nContent-Length: 25\r\n"
            b"Connection: close\r\n\r\n{\"error\": \"not allowed\"}\n")
HTTP_401 = (b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic\r\nContent-Length: 0\r\n"
            b"Connection: close\r\n\r\n")


async def test_closed_silent_and_foreign_ports_read_alike(api: Api) -> None:
    remember_secret("b-secret")
    logged = len(LOG_LINES)
    def configs(port: int) -> dict[str, dict[str, Any]]:
        return {"postgresql": {"connection_url": f"postgresql://a:b-secret@127.0.0.1:{port}/x"},
                "redis": {"host": "127.0.0.1", "port": port, "password": "b-secret"},
                "rabbitmq": {"management_url": f"http://127.0.0.1:{port}", "username": "a", "password": "b-secret"}}

    answers: dict[str, set[tuple[str, str, str]]] = {"postgresql": set(), "redis": set(), "rabbitmq": set()}
    async with listener(None) as silent, listener(HTTP_405) as http_405, listener(HTTP_401) as http_401, \
            listener(b"SSH-2.0-OpenSSH_9.2\r\n") as ssh, listener(b"") as closing:
        for port in (free_port(), silent, http_405, http_401, ssh, closing):
            for kind, config in configs(port).items():
                engine_name = f"{kind[:5]}-{port}"
                err = await expect(api, "engine_unreachable", "POST", "/v1/engines",
                                   json={"name": engine_name, "type": kind, "config": config})
                assert err["details"] == {"engine": engine_name} and "b-secret" not in repr(err), err
                answers[kind].add((err["code"], err["message"].replace(engine_name, "<engine>"),
                                   repr(sorted(err["details"]))))
    for kind, seen in answers.items():
        assert seen == {("engine_unreachable", "engine '<engine>': could not connect to the engine's server",
                         "['engine']")}, (kind, seen)
    # the cause is the server log's, and differs there
    causes = {line for line in LOG_LINES[logged:] if "engine_unreachable" in line}
    assert any("ConnectionRefusedError" in c for c in causes) and any("TimeoutError" in c for c in causes), causes


async def test_a_postgresql_engine_that_fails_on_tls_says_so(api: Api) -> None:
    """issue #28: TLS trouble is engine_unreachable with details.reason "tls" and a hint about sslmode — only
    where the peer showed it is PostgreSQL (its 'N' to SSLRequest, or a TLS handshake after its 'S'), so an
    HTTP or SSH port still reads like a closed one."""
    async with pg_admin() as admin:
        bundle = await asyncio.to_thread(Path("/etc/ssl/certs/ca-certificates.crt").read_text)  # a CA not the server's
        start = bundle.index("-----BEGIN CERTIFICATE-----")
        other_ca = bundle[start:bundle.index("-----END CERTIFICATE-----", start) + 25] + "\n"
        name_ = name("tls")
        err = await expect(api, "engine_unreachable", "POST", "/v1/engines", json={
            "name": name_, "type": "postgresql",
            "config": pg_config(admin, sslmode="verify-full", ca_certificate=other_ca)})
        assert err["details"] == {"engine": name_, "reason": "tls"}, err
        assert "certificate was not accepted" in err["message"] and "sslmode" in err["message"], err
        assert admin["password"] not in repr(err)
    async with listener(b"N") as plain_postgres, listener(b"HTTP/1.1 400 Bad Request\r\n\r\n") as http:
        err = await expect(api, "engine_unreachable", "POST", "/v1/engines", json={
            "name": name("tls"), "type": "postgresql",
            "config": {"connection_url": f"postgresql://a:b@127.0.0.1:{plain_postgres}/x"}})
        assert err["details"]["reason"] == "tls" and "does not offer TLS" in err["message"], err
        assert "sslmode" in err["message"], err
        err = await expect(api, "engine_unreachable", "POST", "/v1/engines", json={
            "name": name("tls"), "type": "postgresql",
            "config": {"connection_url": f"postgresql://a:b@127.0.0.1:{http}/x"}})
        assert "reason" not in err["details"], err
