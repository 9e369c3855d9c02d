"""Exports (api.md §5.3) through the gateway, in both run modes: bundles the ``age`` CLI and pyrage open,
for an age X25519 recipient and an ssh-ed25519 key, in both formats; only what the caller may read;
every code; bundles gone after their TTL; nothing in clear at rest."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.platform import Platform
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_gateway_envelope import assert_envelope

#: the Debian package ``age`` (``make test`` installs it): its CLI must open every bundle
AGE = shutil.which("age") or "age"


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn, export_ttl="3s",
                            export_poll_interval=0.1, lifecycle_interval=0.2) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An age identity made by ``age-keygen`` and an ssh-ed25519 key pair."""
    home = tmp_path_factory.mktemp("age")
    subprocess.run(["age-keygen", "-o", str(home / "age.txt")], check=True, capture_output=True)
    age_secret = (home / "age.txt").read_text()
    age_public = next(line.split(": ")[1] for line in age_secret.splitlines() if line.startswith("# public key"))
    key = Ed25519PrivateKey.generate()
    ssh_private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
    (home / "ssh").write_bytes(ssh_private)
    (home / "ssh").chmod(0o600)
    ssh_public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode() + " test@coffer"
    return {"age": age_public, "age_file": home / "age.txt", "ssh": ssh_public, "ssh_file": home / "ssh",
            "age_identity": pyrage.x25519.Identity.from_str(
                next(line for line in age_secret.splitlines() if line.startswith("AGE-SECRET-KEY"))),
            "ssh_identity": pyrage.ssh.Identity.from_buffer(ssh_private)}


async def expect(api: Api, code: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, body, headers = await api.request(method, path, **kwargs)
    return assert_envelope(status, body, headers, code)


async def put(api: Api, path: str, value: Any, **body: Any) -> None:
    status, meta, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": value, **body})
    assert status in (200, 201), meta


async def ready(api: Api, prefix: str, fmt: str, recipient: str, *, token: str | None = "default") -> dict[str, Any]:
    status, job, headers = await api.request("POST", "/v1/exports", token=token,
                                             json={"prefix": prefix, "format": fmt, "recipient": recipient})
    assert status == 202, job
    assert job["status"] == "pending" and job["done"] == 0 and job["id"].startswith("exp_")
    assert headers["Location"] == f"/v1/exports/{job['id']}"
    for _ in range(200):
        status, job, _ = await api.request("GET", f"/v1/exports/{job['id']}", token=token)
        assert status == 200, job
        assert 0 <= job["done"] <= job["count"]
        if job["status"] != "pending":
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "ready", job
    return dict(job)


async def bundle(api: Api, export_id: str, token: str | None = "default") -> bytes:
    status, body, headers = await api.request("GET", f"/v1/exports/{export_id}/bundle", token=token)
    assert status == 200 and headers["Content-Type"] == "application/octet-stream", body
    assert isinstance(body, bytes) and body.startswith(b"age-encryption.org/v1\n")
    return body


def age_open(data: bytes, identity_file: Path) -> bytes:
    done = subprocess.run([AGE, "-d", "-i", str(identity_file)], input=data, capture_output=True,
                          check=True, timeout=30)
    return done.stdout


async def test_a_json_export_for_an_age_recipient(api: Api, keys: dict[str, Any]) -> None:
    base = name("exp")
    values = {f"{base}/app/db": remember_secret("pw-" + base), f"{base}/app/conf": {"port": 5432, "ssl": True}}
    await put(api, f"{base}/app/db", values[f"{base}/app/db"])
    await put(api, f"{base}/app/conf", values[f"{base}/app/conf"], secret_type="json")
    await put(api, f"{base}/app/gone", remember_secret("gone-" + base))
    assert (await api.request("DELETE", f"/v1/secrets/{base}/app/gone"))[0] == 204
    await put(api, f"{base}/app/short", remember_secret("short-" + base), ttl="1s")
    await put(api, f"{base}/other", remember_secret("other-" + base))
    await asyncio.sleep(1.1)  # the short one expires
    job = await ready(api, f"{base}/app/", "json", keys["age"])
    assert job["count"] == 2 and job["prefix"] == f"{base}/app/" and job["format"] == "json"
    data = await bundle(api, job["id"])
    assert json.loads(age_open(data, keys["age_file"])) == values
    assert json.loads(pyrage.decrypt(data, [keys["age_identity"]])) == values
    assert values[f"{base}/app/db"].encode() not in data


async def test_a_dotenv_export_for_an_ssh_key(api: Api, keys: dict[str, Any]) -> None:
    base = name("env")
    tricky = remember_secret(f'a "quoted" \\ value\nwith a second line {base}')
    await put(api, f"{base}/db-password", tricky)
    await put(api, f"{base}/api.key", remember_secret("k-" + base))
    await put(api, f"{base}/nested/conf", {"a": 1}, secret_type="json")
    job = await ready(api, f"{base}/", "dotenv", keys["ssh"])
    data = await bundle(api, job["id"])
    text = age_open(data, keys["ssh_file"]).decode()
    assert text == pyrage.decrypt(data, [keys["ssh_identity"]]).decode()
    escaped = tricky.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    assert text.splitlines() == [f'API_KEY="k-{base}"', f'DB_PASSWORD="{escaped}"', 'NESTED_CONF="{\\"a\\":1}"']
    # two paths that make one KEY can't share a dotenv file (json keeps them apart)
    await put(api, f"{base}/api_key", "x")
    err = await expect(api, "validation_error", "POST", "/v1/exports",
                       json={"prefix": f"{base}/", "format": "dotenv", "recipient": keys["ssh"]})
    assert err["details"]["key"] == "API_KEY" and "k-" + base not in json.dumps(err)
    assert (await ready(api, f"{base}/", "json", keys["ssh"]))["count"] == 4


async def test_only_what_the_caller_may_read_goes_in(api: Api, keys: dict[str, Any]) -> None:
    base = name("mine")
    for path in ("team-a/db", "team-a/api", "team-b/db"):
        await put(api, f"{base}/{path}", remember_secret(f"{path}-{base}"))
    helpdesk = await identity(api, ["secrets:read"], [
        allow([f"secrets/{base}/team-a/**"], ["read"]),
        {"effect": "deny", "paths": [f"secrets/{base}/team-a/api"], "capabilities": ["read"]}])
    job = await ready(api, f"{base}/", "json", keys["age"], token=helpdesk["token"])
    assert job["count"] == 1
    data = await bundle(api, job["id"], token=helpdesk["token"])
    assert json.loads(age_open(data, keys["age_file"])) == {f"{base}/team-a/db": f"team-a/db-{base}"}
    # someone else in the tenant sees it only through a policy on exports/<id>
    other = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read"])])
    await expect(api, "export_not_found", "GET", f"/v1/exports/{job['id']}", token=other["token"])
    await expect(api, "export_not_found", "GET", f"/v1/exports/{job['id']}/bundle", token=other["token"])
    auditor = await identity(api, ["secrets:read"], [allow([f"exports/{job['id']}"], ["read"])])
    assert (await api.request("GET", f"/v1/exports/{job['id']}", token=auditor["token"]))[0] == 200
    # another tenant: the id does not exist there
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    stranger = await identity(api, ["secrets:read"], [allow(["**"], ["read", "list"])], tenant=tenant["id"])
    await expect(api, "export_not_found", "GET", f"/v1/exports/{job['id']}", token=stranger["token"])
    await expect(api, "export_not_found", "GET", f"/v1/exports/{job['id']}/bundle", token=stranger["token"])
    stranger_job = await ready(api, f"{base}/", "json", keys["age"], token=stranger["token"])
    assert stranger_job["count"] == 0
    # the export's audit entry names it
    status, audit, _ = await api.request("GET", f"/v1/audit/events?path_prefix=exports/{job['id']}")
    assert status == 200 and any(e["action"].startswith("POST /v1/exports") for e in audit["items"]), audit


async def test_an_export_that_isnt_the_callers_answers_like_a_made_up_id(api: Api, keys: dict[str, Any]) -> None:
    """Issue #27 (info): an existing export of someone else in the tenant answered 403 ``access_denied``, an
    unknown id 404 ``export_not_found``, so the answer told which ids exist. Now both get the same 404, the same
    envelope and the same words (but for the id), also for a deny on ``exports/**`` and for the bundle."""
    base = name("theirs")
    await put(api, f"{base}/k", remember_secret(f"v-{base}"))
    job = await ready(api, f"{base}/", "json", keys["age"])
    made_up = "exp_" + "0123456789abcdef01234567"
    nosy = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read", "list"])])
    denied = await identity(api, ["secrets:read"], [
        allow(["secrets/**"], ["read"]), {"effect": "deny", "paths": ["exports/**"], "capabilities": ["read"]}])
    for caller in (nosy, denied):
        for tail in ("", "/bundle"):
            answers = []
            for export_id in (job["id"], made_up):
                status, body, headers = await api.request("GET", f"/v1/exports/{export_id}{tail}",
                                                          token=caller["token"])
                err = assert_envelope(status, body, headers, "export_not_found")
                answers.append((status, headers["Content-Type"], err["code"],
                                err["message"].replace(export_id, "<id>"),
                                json.dumps(err["details"]).replace(export_id, "<id>")))
            assert answers[0] == answers[1], answers
    status, still, _ = await api.request("GET", f"/v1/exports/{job['id']}")
    assert status == 200 and still["status"] == "ready"  # its owner still sees it


async def test_export_codes(api: Api, keys: dict[str, Any]) -> None:
    ok = {"prefix": "a/", "format": "json", "recipient": keys["age"]}
    for bad in ({**ok, "recipient": "age1qqqqqqqqqqqqqqqqqq"}, {**ok, "recipient": "ssh-rsa AAAAB3NzaC1yc2E"},
                {**ok, "recipient": "ssh-ed25519 AAAAnotakey"}, {**ok, "recipient": ""},
                {**ok, "recipient": "age1" + "q" * 5000}, {**ok, "format": "yaml"}, {**ok, "format": None},
                {"prefix": "a/", "format": "json"}, {**ok, "prefix": 7}, {**ok, "extra": True}):
        await expect(api, "validation_error", "POST", "/v1/exports", json=bad)
    for prefix in ("../x", "a//b", "ключ/", "a" * 600):
        await expect(api, "invalid_path" if len(prefix) < 512 else "validation_error", "POST", "/v1/exports",
                     json={**ok, "prefix": prefix})
    await expect(api, "invalid_request", "POST", "/v1/exports", data=b"not json")
    await expect(api, "export_not_found", "GET", "/v1/exports/exp_" + "0" * 24)
    await expect(api, "export_not_found", "GET", "/v1/exports/exp_" + "0" * 24 + "/bundle")
    await expect(api, "export_not_found", "GET", "/v1/exports/%2e%2e%2fsecrets")
    reader = await identity(api, ["secrets:write"], [allow(["**"], ["read"])])
    await expect(api, "insufficient_scope", "POST", "/v1/exports", json=ok, token=reader["token"])
    await expect(api, "authentication_required", "POST", "/v1/exports", json=ok, token=None)


async def test_bundles_are_deleted_after_their_ttl_and_never_stored_in_clear(
        api: Api, platform: Platform, keys: dict[str, Any]) -> None:
    base = name("ttl")
    value = remember_secret("ttl-value-" + base)
    await put(api, f"{base}/k", value)
    job = await ready(api, f"{base}/", "json", keys["age"])
    pool = platform.runtimes["secrets"].pool
    assert pool is not None
    schema = platform.settings.schema_for("secrets")
    row = await pool.fetchrow(f'SELECT bundle, paths, recipient FROM "{schema}".exports WHERE id = $1', job["id"])
    assert value.encode() not in bytes(row["bundle"]) and row["paths"] == []

    async def gone() -> bool:
        status, _, _ = await api.request("GET", f"/v1/exports/{job['id']}")
        return status == 404

    deadline = asyncio.get_running_loop().time() + 15
    while not await gone():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    await expect(api, "export_not_found", "GET", f"/v1/exports/{job['id']}/bundle")
    # and the row with its bundle is deleted by the lifecycle sweep
    for _ in range(100):
        if not await pool.fetchval(f'SELECT count(*) FROM "{schema}".exports WHERE id = $1', job["id"]):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the expired export's row was not deleted")
