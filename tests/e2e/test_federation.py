"""Federation (api.md §5.4) through the gateway, in both run modes: a second Coffer tenant read through
its API, AWS Secrets Manager as moto's server implements it (started here), and the failures: a
stopped backend, a throttling one, a slow one, and the circuit breaker in front of a dead one."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from aiohttp import web

from services.platform import Platform
from tests.conftest import Api, free_port, initialised, own_platform, remember_secret, start_moto
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_gateway_envelope import assert_envelope

AWS = {"region": "us-east-1", "access_key_id": "testing",
       "secret_access_key": remember_secret("moto-secret-key-7f3a")}


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn,
                            federation_breaker_failures=3, federation_breaker_cooldown=3.0) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)




@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """moto's server on a loopback port: AWS Secrets Manager as moto implements it."""
    port = free_port()
    proc = start_moto(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


async def aws_put(endpoint: str, secrets_: dict[str, str]) -> None:
    async with get_session().create_client("secretsmanager", region_name="us-east-1", endpoint_url=endpoint,
                                           aws_access_key_id="testing", aws_secret_access_key="x") as sm:
        for key, value in secrets_.items():
            await sm.create_secret(Name=key, SecretString=value)


@pytest.fixture(scope="module")
async def fake_upstreams() -> AsyncIterator[str]:
    """One loopback server playing a throttling AWS endpoint and a failing Coffer, for what no real server
    does on demand: 429/ThrottlingException with Retry-After, a 5xx, an answer that never comes in time."""
    async def aws(request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        body = json.loads(await request.read() or b"{}")
        if target.endswith("ListSecrets"):
            return web.json_response({"SecretList": []})
        if body.get("SecretId") == "slow":
            await asyncio.sleep(3)
        return web.json_response({"__type": "ThrottlingException", "message": "Rate exceeded"}, status=400,
                                 headers={"Retry-After": "7"})

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"access_token": "t", "expires_in": 3600})

    async def secret(request: web.Request) -> web.Response:
        if request.match_info["tail"] == "busy":
            return web.json_response({"error": {"code": "rate_limited"}}, status=429, headers={"Retry-After": "9"})
        return web.json_response({"error": {"code": "internal_error"}}, status=500)

    app = web.Application()
    app.router.add_post("/", aws)
    app.router.add_post("/v1/auth/token", token)
    app.router.add_get("/v1/secrets/{tail:.+}", secret)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def expect(api: Api, code: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, body, headers = await api.request(method, path, **kwargs)
    return assert_envelope(status, body, headers, code)


async def backend(api: Api, kind: str, mount: str, config: dict[str, Any]) -> dict[str, Any]:
    status, made, _ = await api.request("POST", "/v1/federation/backends", json={
        "name": name("fb"), "type": kind, "mount_path": mount, "config": config})
    assert status == 201, made
    return dict(made)


@pytest.fixture(scope="module")
async def upstream_coffer(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str,
                          http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    """Another Coffer (embedded, schemas of its own): a platform's own gateway is never a backend's upstream."""
    async with own_platform("embedded", tmp_path_factory.mktemp("upstream"), pg_dsn) as other:
        yield await initialised(other, http)


@pytest.fixture(scope="module")
async def upstream(upstream_coffer: Api) -> dict[str, Any]:
    """A tenant with secrets in another Coffer, and a reader identity in it: the ``coffer`` backend's other
    side (``url``)."""
    api = upstream_coffer
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("upstream")})
    assert status == 201
    reader = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read", "list"])], tenant=tenant["id"])
    remember_secret(reader["client_secret"])
    writer = await identity(api, ["secrets:write"], [allow(["secrets/**"], ["write"])], tenant=tenant["id"])
    values = {"team/db": remember_secret("upstream-db-" + name()),
              "team/api": remember_secret("upstream-api-" + name()),
              "other/x": "x"}
    for path, value in values.items():
        status, _, _ = await api.request("PUT", f"/v1/secrets/{path}", token=writer["token"], json={"value": value})
        assert status == 201
    return {"tenant": tenant, "reader": reader, "values": values, "url": api.url}


async def test_a_coffer_backend_answers_reads_and_lists_in_coffers_shapes(
        api: Api, platform: Platform, upstream: dict[str, Any]) -> None:
    reader = upstream["reader"]
    made = await backend(api, "coffer", "ext/acme", {"url": upstream["url"], "client_id": reader["client_id"],
                                                     "client_secret": reader["client_secret"], "timeout": "3s"})
    assert made["config"] == {"url": upstream["url"], "client_id": reader["client_id"], "tenant_id": None,
                              "timeout": "3s"}  # the secret is never answered
    status, got, _ = await api.request("GET", "/v1/secrets/ext/acme/team/db")
    assert status == 200, got
    assert got["value"] == upstream["values"]["team/db"] and got["backend"] == made["name"]
    assert got["path"] == "ext/acme/team/db" and got["version"] == 1 and got["secret_type"] == "generic"
    status, listed, _ = await api.request("GET", "/v1/secrets?prefix=ext/acme/team/")
    assert status == 200 and [i["path"] for i in listed["items"]] == ["ext/acme/team/api", "ext/acme/team/db"]
    assert all(i["backend"] == made["name"] and "value" not in i for i in listed["items"])
    status, paged, _ = await api.request("GET", "/v1/secrets?prefix=ext/acme/&limit=1")
    assert status == 200 and len(paged["items"]) == 1 and paged["next_cursor"]
    status, rest, _ = await api.request("GET", f"/v1/secrets?prefix=ext/acme/&limit=1&cursor={paged['next_cursor']}")
    assert status == 200 and rest["items"][0]["path"] > paged["items"][0]["path"]
    status, versions, _ = await api.request("GET", "/v1/secrets/ext/acme/team/db:versions")
    assert status == 200 and [v["version"] for v in versions["items"]] == [1]
    # local secrets keep no "backend" key
    assert (await api.request("PUT", "/v1/secrets/local/one", json={"value": "v"}))[0] == 201
    status, local, _ = await api.request("GET", "/v1/secrets/local/one")
    assert "backend" not in local
    await expect(api, "secret_not_found", "GET", "/v1/secrets/ext/acme/team/missing")
    await expect(api, "version_not_found", "GET", "/v1/secrets/ext/acme/team/db?version=2")
    # mounts are read-only
    for method, suffix in (("PUT", ""), ("DELETE", ""), ("POST", ":restore"), ("POST", ":purge"),
                           ("POST", ":rotate")):
        err = await expect(api, "invalid_request", method, f"/v1/secrets/ext/acme/team/db{suffix}",
                           json={"value": "overwrite"})
        assert err["details"]["backend"] == made["name"]
    # policies apply to mounted paths like any other
    narrow = await identity(api, ["secrets:read"], [allow(["secrets/ext/acme/team/api"], ["read", "list"])])
    await expect(api, "access_denied", "GET", "/v1/secrets/ext/acme/team/db", token=narrow["token"])
    assert (await api.request("GET", "/v1/secrets/ext/acme/team/api", token=narrow["token"]))[0] == 200
    status, seen, _ = await api.request("GET", "/v1/secrets?prefix=ext/acme/", token=narrow["token"])
    assert [i["path"] for i in seen["items"]] == ["ext/acme/team/api"]


async def test_backend_crud_and_codes(api: Api, platform: Platform, upstream: dict[str, Any], moto: str) -> None:
    reader = upstream["reader"]
    good = {"url": upstream["url"], "client_id": reader["client_id"], "client_secret": reader["client_secret"]}
    made = await backend(api, "coffer", "crud/a", good)
    one = f"/v1/federation/backends/{made['name']}"
    status, got, _ = await api.request("GET", one)
    assert status == 200 and got == made
    status, listed, _ = await api.request("GET", "/v1/federation/backends?limit=1000")
    assert made["name"] in [b["name"] for b in listed["items"]]
    assert reader["client_secret"] not in str(listed)
    base = {"name": name("fb"), "type": "coffer", "mount_path": "crud/b"}
    await expect(api, "name_conflict", "POST", "/v1/federation/backends", json={**base, "name": made["name"],
                                                                               "config": good})
    for mount in ("crud/a", "crud/a/deeper", "crud"):
        err = await expect(api, "name_conflict", "POST", "/v1/federation/backends",
                           json={**base, "mount_path": mount, "config": good})
        assert err["details"]["mount_path"] == "crud/a"
    err = await expect(api, "invalid_config", "POST", "/v1/federation/backends",
                       json={**base, "config": {**good, "client_secret": "wrong-" + name()}})
    assert "wrong-" not in str(err)
    for config in ({"url": platform.url}, {**good, "timeout": "2m"}, {**good, "extra": 1},
                   {**good, "url": "ftp://127.0.0.1/"}, {**good, "url": "https://10.0.0.1/"},
                   {**good, "url": "http://127.0.0.1:22/"}, {**good, "client_secret": 7}):
        await expect(api, "invalid_config", "POST", "/v1/federation/backends", json={**base, "config": config})
    await expect(api, "invalid_config", "POST", "/v1/federation/backends",
                 json={**base, "type": "aws_secrets_manager", "config": {"region": "us-east-1"}})
    await expect(api, "backend_error", "POST", "/v1/federation/backends",
                 json={**base, "config": {**good, "url": f"http://127.0.0.1:{free_port()}"}})
    await expect(api, "invalid_duration", "POST", "/v1/federation/backends",
                 json={**base, "config": {**good, "timeout": "soon"}})
    await expect(api, "invalid_path", "POST", "/v1/federation/backends",
                 json={**base, "mount_path": "../x", "config": good})
    for body in ({**base, "type": "vault", "config": good}, {**base, "name": "Ключ", "config": good},
                 {**base, "config": "url"}, {"name": name("fb")}):
        status, err_body, headers = await api.request("POST", "/v1/federation/backends", json=body)
        assert_envelope(status, err_body, headers, "validation_error")
    status, listed, _ = await api.request("GET", "/v1/federation/backends?limit=1000")
    assert [b["mount_path"] for b in listed["items"] if b["mount_path"].startswith("crud")] == ["crud/a"]
    # another tenant sees none of it; a helpdesk identity can't add one
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    stranger = await identity(api, ["admin", "secrets:read"], [allow(["**"], ["read", "list", "manage"])],
                              tenant=tenant["id"])
    await expect(api, "federation_backend_not_found", "GET", one, token=stranger["token"])
    await expect(api, "secret_not_found", "GET", "/v1/secrets/crud/a/team/db", token=stranger["token"])
    helpdesk = await identity(api, ["admin"], [allow(["federation/other"], ["read"])])
    await expect(api, "access_denied", "POST", "/v1/federation/backends", token=helpdesk["token"],
                 json={**base, "config": good})
    writer = await identity(api, ["secrets:write"], [allow(["**"], ["manage"])])
    await expect(api, "insufficient_scope", "GET", "/v1/federation/backends", token=writer["token"])
    # credentials are sealed at rest and re-wrapped on KEK rotation
    pool = platform.runtimes["secrets"].pool
    assert pool is not None
    table = f'"{platform.settings.schema_for("secrets")}".federation_backends'
    row = await pool.fetchrow(f"SELECT config::text, ciphertext, kek_id FROM {table} WHERE name = $1", made["name"])
    assert reader["client_secret"] not in row["config"] and reader["client_secret"].encode() not in row["ciphertext"]
    status, rotated, _ = await api.request("POST", "/v1/sys/kms:rotate")
    assert status == 200 and "secrets" not in rotated["unreadable"], rotated
    assert await pool.fetchval(f"SELECT kek_id FROM {table} WHERE name = $1", made["name"]) != row["kek_id"]
    assert (await api.request("GET", "/v1/secrets/crud/a/team/db"))[0] == 200
    assert (await api.request("DELETE", one))[0] == 204
    await expect(api, "federation_backend_not_found", "GET", one)
    await expect(api, "federation_backend_not_found", "DELETE", one)
    await expect(api, "secret_not_found", "GET", "/v1/secrets/crud/a/team/db")  # the mount is gone (local now)


async def test_aws_secrets_manager_through_moto(api: Api, moto: str) -> None:
    base = name("aws")
    value = remember_secret("aws-value-" + base)
    await aws_put(moto, {f"{base}/db": value, f"{base}/api": "k", f"{base}x/other": "o"})
    made = await backend(api, "aws_secrets_manager", "aws/prod", {**AWS, "endpoint_url": moto})
    assert "secret_access_key" not in made["config"] and made["config"]["access_key_id"] == "testing"
    status, got, _ = await api.request("GET", f"/v1/secrets/aws/prod/{base}/db")
    assert status == 200, got
    assert got["value"] == value and got["backend"] == made["name"] and got["path"] == f"aws/prod/{base}/db"
    assert got["metadata"]["aws_version_id"]
    status, listed, _ = await api.request("GET", f"/v1/secrets?prefix=aws/prod/{base}/")
    assert status == 200 and [i["path"] for i in listed["items"]] == [f"aws/prod/{base}/api", f"aws/prod/{base}/db"]
    await expect(api, "secret_not_found", "GET", f"/v1/secrets/aws/prod/{base}/missing")
    await expect(api, "invalid_request", "PUT", f"/v1/secrets/aws/prod/{base}/db", json={"value": "x"})


async def test_a_stopped_backend_is_backend_error_then_its_circuit_opens(api: Api) -> None:
    port = free_port()
    proc = start_moto(port)
    try:
        await aws_put(f"http://127.0.0.1:{port}", {"k": "v"})
        made = await backend(api, "aws_secrets_manager", "dying", {**AWS, "endpoint_url": f"http://127.0.0.1:{port}",
                                                                  "timeout": "2s"})
        assert (await api.request("GET", "/v1/secrets/dying/k"))[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
    for _ in range(3):  # the threshold of the test platform
        err = await expect(api, "backend_error", "GET", "/v1/secrets/dying/k")
        assert err["details"]["backend"] == made["name"] and "circuit" not in err["details"]
    started = time.perf_counter()
    status, body, headers = await api.request("GET", "/v1/secrets/dying/k")
    elapsed = time.perf_counter() - started
    err = assert_envelope(status, body, headers, "backend_error")
    assert err["details"]["circuit"] == "open" and 1 <= int(headers["Retry-After"]) <= 3
    assert elapsed < 0.5, elapsed  # answered without asking the dead backend
    # after the cooldown one call is let through again: the backend is back
    proc = start_moto(port)
    try:
        await aws_put(f"http://127.0.0.1:{port}", {"k": "again"})
        await asyncio.sleep(3.2)
        status, got, _ = await api.request("GET", "/v1/secrets/dying/k")
        assert status == 200 and got["value"] == "again"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_throttled_and_slow_backends(api: Api, fake_upstreams: str) -> None:
    """The fake upstreams are on 127.0.0.1, reached through the operator's private allow-list: a rate limit is
    still one (with its Retry-After), but neither the upstream's status nor its words are shown, and a slow
    backend reads like an unreachable one (issue #27; a public backend's would say backend_timeout)."""
    aws = await backend(api, "aws_secrets_manager", "throttled", {**AWS, "endpoint_url": fake_upstreams,
                                                                "timeout": "1s"})
    status, body, headers = await api.request("GET", "/v1/secrets/throttled/anything")
    err = assert_envelope(status, body, headers, "backend_rate_limited")
    assert headers["Retry-After"] == "7" and err["details"] == {"backend": aws["name"]}
    started = time.perf_counter()
    err = await expect(api, "backend_error", "GET", "/v1/secrets/throttled/slow")
    assert err["details"] == {"backend": aws["name"]} and time.perf_counter() - started < 2.5
    assert err["message"] == f"could not connect to backend '{aws['name']}'"
    coffer = await backend(api, "coffer", "failing", {"url": fake_upstreams, "client_id": "c", "client_secret": "s"})
    status, body, headers = await api.request("GET", "/v1/secrets/failing/busy")
    assert_envelope(status, body, headers, "backend_rate_limited")
    assert headers["Retry-After"] == "9"
    err = await expect(api, "backend_error", "GET", "/v1/secrets/failing/broken")
    assert err["details"] == {"backend": coffer["name"]} and "500" not in err["message"].replace(coffer["name"], "")
    assert err["message"] == f"could not connect to backend '{coffer['name']}'"
