"""KV v2 on the Vault-compatible listener (api.md §13), driven by an unmodified ``hvac``: every KV v2 call it
makes (create, CAS, update, patch, read a version, list, metadata, delete, undelete, destroy, delete the
metadata), what it means in Coffer's own API, the policies in force, paths that try to escape, and the
answers' shapes against Vault's documented examples. The core KV + auth flow runs in both run modes.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import hvac
import pytest
from yarl import URL

from services.gateway.vault.kv_shapes import kv_map
from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import allow, identity
from tests.e2e.test_readme import section
from tests.e2e.test_secrets import unique
from tests.e2e.test_tenants import tenant
from tests.e2e.vault_helpers import assert_shape, documented, off, vault, vault_platform

KV_CAPS = ["read", "list", "write", "delete", "restore", "purge"]


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str,
              http: aiohttp.ClientSession) -> AsyncIterator[tuple[Api, str]]:
    async with vault_platform("embedded", tmp_path_factory.mktemp("vault-kv"), pg_dsn, http) as (_, api, url):
        yield api, url


@pytest.fixture
async def rabbit_env(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str,
                     http: aiohttp.ClientSession) -> AsyncIterator[tuple[Api, str]]:
    async with vault_platform("rabbitmq", tmp_path_factory.mktemp("vault-kv-mq"), pg_dsn, http) as (_, api, url):
        yield api, url


def kv(client: hvac.Client) -> Any:
    return client.secrets.kv.v2


def value(prefix: str = "v") -> str:
    return remember_secret(f"{prefix}-{secrets.token_hex(8)}")


async def core_flow(api: Api, url: str) -> None:
    """An approle login of a narrow identity, then KV v2's life cycle under its policy, and a path outside it."""
    base = unique("core")
    svc = await identity(api, ["secrets:read", "secrets:write"], [allow([f"secrets/{base}/**"], KV_CAPS)])
    client = vault(url)
    login = await off(client.auth.approle.login, role_id=svc["client_id"], secret_id=svc["client_secret"])
    remember_secret(login["auth"]["client_token"])
    assert client.token == login["auth"]["client_token"] and login["auth"]["entity_id"] == svc["id"]
    first, second = {"user": "app", "password": value()}, {"user": "app", "password": value()}
    made = await off(kv(client).create_or_update_secret, path=f"{base}/db", secret=first, cas=0)
    assert made["data"]["version"] == 1 and made["data"]["destroyed"] is False
    with pytest.raises(hvac.exceptions.UnexpectedError) as exists:  # cas 0: create only (409 version_conflict)
        await off(kv(client).create_or_update_secret, path=f"{base}/db", secret=second, cas=0)
    assert exists.value.json["error"]["code"] == "version_conflict" and exists.value.errors
    assert (await off(kv(client).create_or_update_secret, path=f"{base}/db", secret=second, cas=1))["data"][
        "version"] == 2
    read = await off(kv(client).read_secret_version, path=f"{base}/db", raise_on_deleted_version=True)
    assert read["data"]["data"] == second and read["data"]["metadata"]["version"] == 2
    assert (await off(kv(client).list_secrets, path=base))["data"]["keys"] == ["db"]
    assert (await off(kv(client).read_secret_metadata, path=f"{base}/db"))["data"]["current_version"] == 2
    await off(kv(client).delete_latest_version_of_secret, path=f"{base}/db")
    with pytest.raises(hvac.exceptions.InvalidPath):
        await off(kv(client).read_secret_version, path=f"{base}/db", raise_on_deleted_version=True)
    await off(kv(client).undelete_secret_versions, path=f"{base}/db", versions=[2])
    await off(kv(client).destroy_secret_versions, path=f"{base}/db", versions=[1])
    meta = await off(kv(client).read_secret_metadata, path=f"{base}/db")
    assert meta["data"]["versions"]["1"]["destroyed"] is True and meta["data"]["versions"]["2"]["deletion_time"] == ""
    await off(kv(client).delete_metadata_and_all_versions, path=f"{base}/db")
    with pytest.raises(hvac.exceptions.InvalidPath):
        await off(kv(client).read_secret_metadata, path=f"{base}/db")
    with pytest.raises(hvac.exceptions.Forbidden) as denied:  # outside its policy: Coffer's access_denied
        await off(kv(client).read_secret_version, path=f"{unique('other')}/db", raise_on_deleted_version=True)
    assert denied.value.json["error"]["code"] == "access_denied"


async def test_core_kv_and_auth_on_rabbitmq(rabbit_env: tuple[Api, str]) -> None:
    """First in the module: its platform is gone before the module's embedded one starts."""
    await core_flow(*rabbit_env)


async def test_core_kv_and_auth_embedded(env: tuple[Api, str]) -> None:
    await core_flow(*env)


async def test_every_kv_v2_call_and_what_coffers_api_sees(env: tuple[Api, str]) -> None:
    api, url = env
    client, base = vault(url, api.token), unique("kv")
    path = f"{base}/app/config"
    status, _, _ = await api.request("PUT", f"/v1/secrets/{path}", json={
        "value": {"host": "db", "port": "5432"}, "secret_type": "json", "metadata": {"owner": "jdoe"}})
    assert status == 201
    # an update keeps the key's custom metadata (Coffer's metadata) and the type
    await off(kv(client).create_or_update_secret, path=path, secret={"host": "db2", "port": "5432"})
    status, seen, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert (seen["value"], seen["metadata"], seen["secret_type"], seen["version"]) == (
        {"host": "db2", "port": "5432"}, {"owner": "jdoe"}, "json", 2)
    # hvac's patch (read, merge, write with cas) and Vault's PATCH (a JSON merge patch, null removes a key)
    assert (await off(kv(client).patch, path=path, secret={"user": "u"}))["data"]["version"] == 3
    raw = await off(client.adapter.request, "PATCH", f"/v1/secret/data/{path}",
                    headers={"Content-Type": "application/merge-patch+json"},
                    json={"data": {"port": None, "tls": {"on": "yes"}}, "options": {"cas": 3}})
    assert raw["data"]["version"] == 4
    latest = await off(kv(client).read_secret_version, path=path, raise_on_deleted_version=True)
    assert latest["data"]["data"] == {"host": "db2", "user": "u", "tls": {"on": "yes"}}
    assert latest["data"]["metadata"]["custom_metadata"] == {"owner": "jdoe"}
    old = await off(kv(client).read_secret_version, path=path, version=1, raise_on_deleted_version=True)
    assert old["data"]["data"] == {"host": "db", "port": "5432"} and old["data"]["metadata"]["version"] == 1
    with pytest.raises(hvac.exceptions.UnexpectedError):  # a PATCH with a stale cas
        await off(client.adapter.request, "PATCH", f"/v1/secret/data/{path}", json={"data": {}, "options": {"cas": 1}})
    # a string secret is {"value": …}, and a write of that keeps it a string of its type
    status, _, _ = await api.request("PUT", f"/v1/secrets/{base}/pw",
                                     json={"value": value(), "secret_type": "password"})
    assert status == 201
    fresh = value("new")
    await off(kv(client).create_or_update_secret, path=f"{base}/pw", secret={"value": fresh})
    status, seen, _ = await api.request("GET", f"/v1/secrets/{base}/pw")
    assert (seen["value"], seen["secret_type"]) == (fresh, "password")
    assert (await off(kv(client).read_secret, path=f"{base}/pw", raise_on_deleted_version=True))["data"][
        "data"] == {"value": fresh}
    # LIST and GET ?list=true: one level, folders end in /
    assert (await off(kv(client).list_secrets, path=base))["data"]["keys"] == ["app/", "pw"]
    listed = await off(client.adapter.get, f"/v1/secret/metadata/{base}/app", params={"list": "true"})
    assert listed["data"]["keys"] == ["config"]
    # soft delete of the latest version: 404 with the version's metadata, as hvac reads it; undelete
    await off(kv(client).delete_latest_version_of_secret, path=path)
    gone = await off(kv(client).read_secret_version, path=path, raise_on_deleted_version=False)
    assert gone["data"]["data"] is None and gone["data"]["metadata"]["deletion_time"] and gone["errors"]
    status, body, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert status == 404 and body["error"]["code"] == "version_not_found" and body["error"]["details"]["deleted"]
    await off(kv(client).undelete_secret_versions, path=path, versions=[4])
    # delete and destroy given versions; a destroyed one stays destroyed
    await off(kv(client).delete_secret_versions, path=path, versions=[1, 2, 99])
    await off(kv(client).destroy_secret_versions, path=path, versions=[2])
    await off(kv(client).undelete_secret_versions, path=path, versions=[1, 2])
    meta = (await off(kv(client).read_secret_metadata, path=path))["data"]
    assert meta["current_version"] == 4 and meta["custom_metadata"] == {"owner": "jdoe"}
    assert {v: (e["deletion_time"] != "", e["destroyed"]) for v, e in meta["versions"].items()} == {
        "1": (False, False), "2": (True, True), "3": (False, False), "4": (False, False)}
    with pytest.raises(hvac.exceptions.InvalidPath) as destroyed:
        await off(kv(client).read_secret_version, path=path, version=2, raise_on_deleted_version=True)
    assert destroyed.value.json["data"]["metadata"]["destroyed"] is True
    # a write after a deleted latest version is a new version, as Vault's
    await off(kv(client).delete_latest_version_of_secret, path=path)
    assert (await off(kv(client).create_or_update_secret, path=path, secret={"a": "b"}))["data"]["version"] == 5
    # the metadata and every version, gone
    await off(kv(client).delete_metadata_and_all_versions, path=path)
    status, body, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert status == 404 and body["error"]["code"] == "secret_not_found"
    assert (await off(kv(client).list_secrets, path=base))["data"]["keys"] == ["pw"]


async def test_a_write_only_caller_sees_no_more_than_it_sent(env: tuple[Api, str]) -> None:
    api, url = env
    path = f"{unique('wo')}/db"
    status, _, _ = await api.request("PUT", f"/v1/secrets/{path}", json={
        "value": {"k": value()}, "secret_type": "json", "metadata": {"owner": "jdoe"}})
    assert status == 201
    writer = await identity(api, ["secrets:write"], [allow([f"secrets/{path}"], ["write"])])
    written = await off(kv(vault(url, writer["token"])).create_or_update_secret, path=path, secret={"k": value()})
    assert written["data"]["version"] == 2 and written["data"]["custom_metadata"] is None
    status, seen, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert seen["metadata"] == {"owner": "jdoe"}  # carried on all the same
    shown = await off(kv(vault(url, api.token)).create_or_update_secret, path=path, secret={"k": value()})
    assert shown["data"]["custom_metadata"] == {"owner": "jdoe"}


async def test_a_patch_needs_read_too_as_it_merges_into_what_is_there(env: tuple[Api, str]) -> None:
    """Attack: a write-only caller (it may replace a value, never see one) PATCHed ``{"host": "evil"}`` into
    ``{"host": "db", "password": …}``: the secret kept the password the caller can't read, and its consumer
    sent that password to the caller's host."""
    api, url = env
    path, password = f"{unique('patch')}/db", value("pw")
    status, _, _ = await api.request("PUT", f"/v1/secrets/{path}", json={
        "value": {"host": "db.internal", "password": password}, "secret_type": "json"})
    assert status == 201
    writer = await identity(api, ["secrets:write"], [allow([f"secrets/{path}"], ["write"])])
    unscoped = await identity(api, ["secrets:write"], [allow([f"secrets/{path}"], ["write", "read"])])
    for caller in (writer, unscoped):  # no secrets:read scope
        with pytest.raises(hvac.exceptions.Forbidden) as denied:
            await off(vault(url, caller["token"]).adapter.request, "PATCH", f"/v1/secret/data/{path}",
                      headers={"Content-Type": "application/merge-patch+json"}, json={"data": {"host": "evil.example"}})
        assert denied.value.json["error"]["code"] == "insufficient_scope"
    scoped = await identity(api, ["secrets:read", "secrets:write"], [allow([f"secrets/{path}"], ["write"])])
    with pytest.raises(hvac.exceptions.Forbidden) as denied:
        await off(vault(url, scoped["token"]).adapter.request, "PATCH", f"/v1/secret/data/{path}",
                  headers={"Content-Type": "application/merge-patch+json"}, json={"data": {"host": "evil.example"}})
    assert denied.value.json["error"]["code"] == "access_denied"
    status, seen, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert (seen["version"], seen["value"]["host"]) == (1, "db.internal")  # nothing written
    reader = await identity(api, ["secrets:read", "secrets:write"], [allow([f"secrets/{path}"], ["write", "read"])])
    patched = await off(vault(url, reader["token"]).adapter.request, "PATCH", f"/v1/secret/data/{path}",
                        headers={"Content-Type": "application/merge-patch+json"}, json={"data": {"port": "5432"}})
    assert patched["data"]["version"] == 2


async def test_response_wrapping_is_refused_not_ignored(env: tuple[Api, str]) -> None:
    """Attack: a pipeline asks for a response-wrapped read (``X-Vault-Wrap-TTL``, ``vault kv get -wrap-ttl``)
    so that only a single-use wrapping token passes through the hands in between; the listener ignored the
    header and answered the secret itself (``wrap_info: null``) to whoever relayed it. Refused, as documented."""
    api, url = env
    path, secret = f"{unique('wrap')}/db", value()
    status, _, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": secret})
    assert status == 201
    client = vault(url, api.token)
    for call in (lambda: client.adapter.get(f"/v1/secret/data/{path}", wrap_ttl="60s"),
                 lambda: client.adapter.request("LIST", f"/v1/secret/metadata/{path.split('/')[0]}", wrap_ttl="5m"),
                 lambda: client.adapter.post("/v1/auth/token/renew-self", wrap_ttl="60s")):
        with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
            await off(call)
        assert refused.value.json["error"]["code"] == "invalid_request" and "wrapping" in refused.value.errors[0]
        assert secret not in str(refused.value.json)


async def test_list_shows_only_what_the_policy_lets_the_caller_list(env: tuple[Api, str]) -> None:
    api, url = env
    base = unique("ls")
    for leaf in ("visible/a", "visible/deep/b", "hidden/c", "top"):
        status, _, _ = await api.request("PUT", f"/v1/secrets/{base}/{leaf}", json={"value": value()})
        assert status == 201
    svc = await identity(api, ["secrets:read"], [allow([f"secrets/{base}/visible/**"], ["list", "read"])])
    client = vault(url, svc["token"])
    assert (await off(kv(client).list_secrets, path=base))["data"]["keys"] == ["visible/"]
    assert (await off(kv(client).list_secrets, path=f"{base}/visible/"))["data"]["keys"] == ["a", "deep/"]
    with pytest.raises(hvac.exceptions.InvalidPath):  # a folder of only hidden names: as if there were none
        await off(kv(client).list_secrets, path=f"{base}/hidden")
    with pytest.raises(hvac.exceptions.Forbidden):
        await off(kv(client).read_secret_metadata, path=f"{base}/hidden/c")


@pytest.mark.parametrize("raw", [
    "/v1/secret/data/a/../b", "/v1/secret/data/a%2fb", "/v1/secret/data/%2e%2e/x", "/v1/secret/data/a//b",
    "/v1/secret/data/%D0%BA%D0%BB%D1%8E%D1%87", "/v1/secr%65t/data/x", "/v1/secret/data/a/%00", "/v1/secret/data/.x",
    "/v1/secret/data/ключ",
])
async def test_a_vault_path_cant_escape_into_another_coffer_path(env: tuple[Api, str], http: aiohttp.ClientSession,
                                                                 raw: str) -> None:
    api, url = env
    async with http.request("POST", URL(url + raw, encoded=True), json={"data": {"k": "v"}},
                            headers={"X-Vault-Token": str(api.token)}) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_path", body
    assert body["errors"] == [body["error"]["message"]]
    status, listed, _ = await api.request("GET", "/v1/secrets?prefix=b")
    assert all(item["path"] not in ("b", "a/b", "x") for item in listed["items"])


async def test_bodies_are_bounded_and_checked_as_on_the_main_api(env: tuple[Api, str],
                                                               http: aiohttp.ClientSession) -> None:
    api, url = env
    path = unique("big")
    headers = {"X-Vault-Token": str(api.token)}
    big = {"data": {"k": "x" * (1024 * 1024 + 10)}}
    async with http.post(f"{url}/v1/secret/data/{path}", json=big, headers=headers) as resp:
        body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "invalid_request" and body["errors"]
    for wrong in ({"data": "text"}, {"options": {"cas": -1}, "data": {}}, {}, {"data": {"k": "x" * 70_000}}):
        async with http.post(f"{url}/v1/secret/data/{path}", json=wrong, headers=headers) as resp:
            body = await resp.json()
        assert resp.status == 422 and body["error"]["code"] == "validation_error", body
    for versions in ("all", [0], [-1], [2**31], [1, 2**40]):  # out of range: 422, not a 500 from the bus contract
        for kind in ("delete", "undelete", "destroy"):
            async with http.post(f"{url}/v1/secret/{kind}/{path}", json={"versions": versions},
                                 headers=headers) as resp:
                body = await resp.json()
            assert resp.status == 422 and body["error"]["code"] == "validation_error", (kind, versions, body)
    status, _, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert status == 404  # nothing stored


def nested(depth: int) -> dict[str, Any]:
    deep: dict[str, Any] = {"k": "v"}
    for _ in range(depth - 1):
        deep = {"k": deep}
    return deep


async def test_a_value_nested_too_deep_is_refused_through_either_listener(env: tuple[Api, str],
                                                                          http: aiohttp.ClientSession) -> None:
    """Attack: a JSON value 200 objects deep was stored and then unreadable by anyone (500 on every read: the
    reply's parser stops at its own depth); 260 deep was a 500 on the write (the audit's serialiser), and a
    Vault PATCH of one crashed in the merge. Any writer could so poison a secret it can't read."""
    api, url = env
    path, headers = unique("deep"), {"X-Vault-Token": str(api.token)}
    written = await api.request("PUT", f"/v1/secrets/{path}/ok", json={"value": nested(64), "secret_type": "json"})
    assert written[0] == 201 and (await api.request("GET", f"/v1/secrets/{path}/ok"))[0] == 200
    for depth in (65, 200, 300):
        status, body, _ = await api.request("PUT", f"/v1/secrets/{path}/x", json={
            "value": nested(depth), "secret_type": "json"})
        assert status == 422 and body["error"]["details"]["fields"][0]["field"] == "value", (depth, body)
        for method, at in (("POST", "x"), ("PATCH", "ok")):
            async with http.request(method, f"{url}/v1/secret/data/{path}/{at}", json={"data": nested(depth)},
                                    headers=headers) as resp:
                body = await resp.json()
            assert resp.status == 422 and body["error"]["code"] == "validation_error", (method, depth, body)
    assert (await api.request("GET", f"/v1/secrets/{path}/x"))[0] == 404
    status, ok, _ = await api.request("GET", f"/v1/secrets/{path}/ok")
    assert status == 200 and ok["version"] == 1


async def test_kv_answers_have_vaults_documented_shapes(env: tuple[Api, str]) -> None:
    api, url = env
    client, path = vault(url, api.token), f"{unique('shape')}/app"
    await api.request("PUT", f"/v1/secrets/{path}", json={"value": {"foo": "bar"}, "secret_type": "json",
                                                           "metadata": {"owner": "jdoe", "mission_critical": "false"}})
    assert_shape(await off(kv(client).create_or_update_secret, path=path, secret={"foo": "baz"}),
                 documented("kv2_create_update_secret"))
    assert_shape(await off(kv(client).patch, path=path, secret={"zip": "zap"}), documented("kv2_patch_secret"))
    assert_shape(await off(kv(client).read_secret_version, path=path, version=2, raise_on_deleted_version=True),
                 documented("kv2_read_secret_version"))
    assert_shape(await off(kv(client).list_secrets, path=path.split("/")[0]), documented("kv2_list_secrets"))
    meta, theirs = await off(kv(client).read_secret_metadata, path=path), documented("kv2_read_secret_metadata")
    assert_shape({**meta["data"], "versions": {}}, {**theirs["data"], "versions": {}})
    for entry in meta["data"]["versions"].values():
        assert_shape(entry, theirs["data"]["versions"]["1"])


async def test_the_readmes_migration_recipe_copies_a_kv_tree(env: tuple[Api, str]) -> None:
    """README "Coming from Vault"'s hvac script, run as written: from one tenant of this Coffer (the "Vault",
    through the listener) to another."""
    api, url = env
    source, target = await tenant(api), await tenant(api)
    old = vault(url, api.token, namespace=source["name"])
    tree = {"app/db": {"user": "app", "password": value()}, "app/cache/redis": {"value": value()},
            "top": {"k": "v"}, "gone": {"k": "deleted"}}
    for path, data in tree.items():
        await off(kv(old).create_or_update_secret, path=path, secret=data)
    await off(kv(old).delete_latest_version_of_secret, path="gone")
    script = re.findall(r"^```python\n(.*?)^```$", section("Coming from Vault"), flags=re.S | re.M)[0]
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "VAULT_ADDR": url, "VAULT_TOKEN": str(api.token), "VAULT_NAMESPACE": source["name"],
             "COFFER_VAULT_ADDR": url, "COFFER_TOKEN": str(api.token), "COFFER_TENANT": target["id"]})
    out, err = await asyncio.wait_for(run.communicate(), 60)
    assert run.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == "copied 3 secrets"
    for path in ("app/db", "app/cache/redis", "top"):
        status, seen, _ = await api.request("GET", f"/v1/secrets/{path}", headers={"X-Tenant-ID": target["id"]})
        assert status == 200 and kv_map(seen["secret_type"], seen["value"]) == tree[path], path
    status, _, _ = await api.request("GET", "/v1/secrets/gone", headers={"X-Tenant-ID": target["id"]})
    assert status == 404
