"""The ``coffer`` command, driven as a subprocess against a live platform, and the Python client against
the real gateway (cli.md).

Each test runs ``coffer`` with a config directory of its own (``XDG_CONFIG_HOME``),
as a user would, and looks at what it printed, where, and with which exit status.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.platform import Platform
from tests.conftest import Api, free_port, initialised, own_platform, remember_secret, start_platform
from tests.e2e.access_helpers import approver, requestable
from tests.e2e.iam_helpers import allow, identity, name, totp_code
from tests.e2e.pki_helpers import make_ca, make_role

COFFER = [sys.executable, "-m", "coffer_client"]


@pytest.fixture(scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform("embedded", tmp_path_factory.mktemp("cli"), pg_dsn, http_port=free_port()) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def admin_identity(api: Api) -> dict[str, Any]:
    return await identity(api, ["secrets:read", "secrets:write", "pki", "leases", "admin"],
                          [allow(["**"], ["read", "list", "write", "delete", "restore", "purge", "rotate", "issue",
                                          "revoke", "manage"])])


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


async def coffer(home: Path, addr: str, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
                 timeout: float = 60) -> Run:
    """``coffer ARGS`` with its own config directory; stdin a pipe (not a terminal)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    full_env.update({"XDG_CONFIG_HOME": str(home), "COFFER_ADDR": addr, **(env or {})})
    proc = await asyncio.create_subprocess_exec(*COFFER, *args, env=full_env, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else b""), timeout)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def logged_in(tmp_path: Path, platform: Platform, who: dict[str, Any]) -> Path:
    home = tmp_path / "cfg"
    run = await coffer(home, platform.url or "", "login", "--client-id", who["client_id"], "--client-secret", "-",
                       stdin=who["client_secret"] + "\n")
    assert run.code == 0, run.err
    return home


# -- login and the token file --------------------------------------------------------------------------

async def test_login_reads_the_secret_from_stdin_and_stores_only_a_token(
        tmp_path: Path, platform: Platform, admin_identity: dict[str, Any]) -> None:
    home = tmp_path / "cfg"
    run = await coffer(home, platform.url or "", "login", "--client-id", admin_identity["client_id"],
                       "--client-secret", "-", "-o", "table", stdin=admin_identity["client_secret"] + "\n")
    assert run.code == 0, run.err
    assert "Logged in to" in run.out and admin_identity["name"] in run.out
    creds = home / "coffer" / "credentials.toml"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds.parent.stat().st_mode) == 0o700
    stored = creds.read_text()
    assert "token" in stored and admin_identity["client_secret"] not in stored
    assert admin_identity["client_secret"] not in run.out + run.err
    who = await coffer(home, platform.url or "", "whoami", "-o", "json")
    assert who.code == 0 and who.json()["identity"]["id"] == admin_identity["id"]
    table = await coffer(home, platform.url or "", "whoami", "-o", "table")
    assert table.code == 0 and admin_identity["name"] in table.out and "secrets:write" in table.out

    # a secret on the command line is refused, and not repeated back
    bad = await coffer(tmp_path / "other", platform.url or "", "login", "--client-id", admin_identity["client_id"],
                       "--client-secret", admin_identity["client_secret"])
    assert bad.code == 2 and "stdin" in bad.err and admin_identity["client_secret"] not in bad.out + bad.err
    wrong = await coffer(tmp_path / "other", platform.url or "", "login", "--client-id",
                         admin_identity["client_id"], "--client-secret", "-", stdin="not-the-secret\n")
    assert wrong.code == 3 and wrong.err.startswith("error: authentication_required: ") and "(request req_" in wrong.err
    assert "not-the-secret" not in wrong.out + wrong.err
    assert not (tmp_path / "other" / "coffer" / "credentials.toml").exists()
    logout = await coffer(home, platform.url or "", "logout")
    assert logout.code == 0 and "logged out" in logout.out
    assert (await coffer(home, platform.url or "", "whoami")).code == 3  # no token left


async def test_a_user_with_a_second_factor_is_asked_for_its_code(tmp_path: Path, platform: Platform,
                                                                 api: Api) -> None:
    username, password = name("user"), remember_secret("correct horse battery staple 7")
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": username, "kind": "user", "allowed_scopes": ["secrets:read"], "password": password})
    assert status == 201
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"username": username, "password": password})
    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp",
                                         token=remember_secret(tok["access_token"]))
    assert status == 201
    remember_secret(enrol["otpauth_uri"])
    code = totp_code(enrol["otpauth_uri"])
    run = await coffer(tmp_path, platform.url or "", "login", "--username", username, "--password", "-",
                       "-o", "json", stdin=f"{password}\n{code}\n")
    assert run.code == 0, run.err
    assert run.json()["mfa_at"] is not None and password not in run.out + run.err


# -- secrets --------------------------------------------------------------------------------------------

async def test_secrets_put_get_ls_versions_rm_restore_purge(tmp_path: Path, platform: Platform,
                                                            admin_identity: dict[str, Any], api: Api) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    base = name("cli")
    value = remember_secret("s3cr3t-" + base)
    put = await coffer(home, addr, "secrets", "put", f"{base}/db/password", "-", "-o", "table", stdin=value + "\n")
    assert put.code == 0 and put.out.strip() == f"wrote {base}/db/password version 1"
    assert value not in put.out + put.err
    get = await coffer(home, addr, "secrets", "get", f"{base}/db/password")
    assert get.code == 0 and get.out == value  # the bytes alone: no newline when piped
    assert (await coffer(home, addr, "secrets", "put", f"{base}/db/password", "v2", "--cas", "1")).code == 0
    conflict = await coffer(home, addr, "secrets", "put", f"{base}/db/password", "v3", "--cas", "1")
    assert conflict.code == 6 and conflict.err.startswith("error: version_conflict: ")
    old = await coffer(home, addr, "secrets", "get", f"{base}/db/password", "--version", "1")
    assert old.out == value
    doc = json.dumps({"user": "app", "port": 5432})
    assert (await coffer(home, addr, "secrets", "put", f"{base}/db/conf", "--type", "json", "--meta", "owner=ops",
                         stdin=doc)).code == 0
    field = await coffer(home, addr, "secrets", "get", f"{base}/db/conf", "--field", "user")
    assert field.code == 0 and field.out == "app"
    whole = await coffer(home, addr, "secrets", "get", f"{base}/db/conf", "-o", "json")
    assert whole.json()["value"] == {"user": "app", "port": 5432} and whole.json()["metadata"] == {"owner": "ops"}
    # every page: 130 secrets under one prefix, the API's pages are 100
    for i in range(128):
        status, _, _ = await api.request("PUT", f"/v1/secrets/{base}/many/k{i:03d}", json={"value": "x"})
        assert status == 201
    listed = await coffer(home, addr, "secrets", "ls", f"{base}/")
    assert listed.code == 0 and len(listed.json()) == 130
    table = await coffer(home, addr, "secrets", "ls", f"{base}/db/", "-o", "table")
    assert f"{base}/db/conf" in table.out and "json" in table.out and value not in table.out
    versions = await coffer(home, addr, "secrets", "versions", f"{base}/db/password")
    assert [v["version"] for v in versions.json()] == [2, 1]
    assert (await coffer(home, addr, "secrets", "rm", f"{base}/db/password")).code == 0
    assert (await coffer(home, addr, "secrets", "get", f"{base}/db/password")).code == 5
    restored = await coffer(home, addr, "secrets", "restore", f"{base}/db/password", "-o", "table")
    assert restored.code == 0 and "restored" in restored.out
    # rotate: a new generated value from the matching rotation policy, never printed
    norot = await coffer(home, addr, "secrets", "rotate", f"{base}/db/password")
    assert norot.code == 5 and norot.err.startswith("error: rotation_policy_not_found: ")
    status, _, _ = await api.request("POST", "/v1/rotation-policies", json={
        "name": name("rp"), "path_pattern": f"{base}/db/*", "interval": "30d", "generator": {"type": "password"}})
    assert status == 201
    rotated = await coffer(home, addr, "secrets", "rotate", f"{base}/db/password", "-o", "table")
    assert rotated.code == 0 and rotated.out.startswith(f"rotated {base}/db/password: version 3"), rotated.err
    fresh = remember_secret((await coffer(home, addr, "secrets", "get", f"{base}/db/password")).out)
    assert len(fresh) == 32 and fresh not in rotated.out + rotated.err
    purged = await coffer(home, addr, "secrets", "purge", f"{base}/db/password")  # stdin is not a terminal
    assert purged.code == 0 and purged.out.strip() == f"purged {base}/db/password"
    missing = await coffer(home, addr, "secrets", "get", f"{base}/db/password")
    assert missing.code == 5 and missing.err.startswith("error: secret_not_found: ") and missing.out == ""


async def test_exit_codes_by_category(tmp_path: Path, platform: Platform, api: Api,
                                      admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    assert (await coffer(home, addr, "secrets", "get")).code == 2  # usage
    assert (await coffer(home, addr, "secrets", "nonsense")).code == 2
    bad_token = await coffer(home, addr, "whoami", env={"COFFER_TOKEN": "not-a-token"})
    assert bad_token.code == 3 and bad_token.err.startswith("error: token_invalid")
    nobody = await identity(api, ["secrets:read"])  # no policy: denied
    forbidden = await coffer(home, addr, "secrets", "get", "x/y", env={"COFFER_TOKEN": nobody["token"]})
    assert forbidden.code == 4 and forbidden.err.startswith("error: access_denied: ")
    assert nobody["token"] not in forbidden.out + forbidden.err
    assert (await coffer(home, addr, "secrets", "get", "no/such")).code == 5
    invalid = await coffer(home, addr, "secrets", "put", "bad path!", "v")
    assert invalid.code == 1 and invalid.err.startswith("error: invalid_path: ")
    down = await coffer(home, f"http://127.0.0.1:{free_port()}", "status")
    assert down.code == 8 and down.err.startswith("error: unreachable: cannot reach")
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": name("t"),
                                                                      "quotas": {"max_secrets": 1}})
    assert status == 201
    there, root = ["--tenant", child["id"]], {"COFFER_TOKEN": api.token or ""}  # a partner admin acts there
    assert (await coffer(home, addr, *there, "secrets", "put", "q/one", "1", env=root)).code == 0
    quota = await coffer(home, addr, *there, "secrets", "put", "q/two", "2", env=root)
    assert quota.code == 7 and quota.err.startswith("error: quota_exceeded: ")


# -- run ------------------------------------------------------------------------------------------------

async def test_run_puts_secrets_in_the_environment_and_passes_the_exit_status(
        tmp_path: Path, platform: Platform, api: Api, admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    base = name("run")
    values = {"db/password": remember_secret("pw-" + base), "api.key": remember_secret("key-" + base)}
    for path, value in values.items():
        assert (await api.request("PUT", f"/v1/secrets/{base}/app/{path}", json={"value": value}))[0] == 201
    assert (await api.request("PUT", f"/v1/secrets/{base}/override/db/password",
                              json={"value": "later-wins"}))[0] == 201
    script = 'printf "%s|%s|%s" "$DB_PASSWORD" "$API_KEY" "${COFFER_TOKEN:-none}"; exit 7'
    run = await coffer(home, addr, "run", "--prefix", f"{base}/app", "--", "sh", "-c", script,
                       env={"COFFER_TOKEN": (home / "coffer" / "credentials.toml").read_text().split('"')[3]})
    assert run.code == 7, run.err
    assert run.out == f"{values['db/password']}|{values['api.key']}|none"  # COFFER_TOKEN is not passed on
    assert all(v not in run.err for v in values.values()) and "2 secret(s)" in run.err
    later = await coffer(home, addr, "run", "--prefix", f"{base}/app/", "--prefix", f"{base}/override", "--",
                         "sh", "-c", 'printf "%s" "$DB_PASSWORD"')
    assert later.code == 0 and later.out == "later-wins"
    missing = await coffer(home, addr, "run", "--prefix", f"{base}/app", "--", "no-such-program-here")
    assert missing.code == 127


async def test_run_passes_signals_to_the_program(tmp_path: Path, platform: Platform,
                                                 admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update({"XDG_CONFIG_HOME": str(home), "COFFER_ADDR": addr})
    proc = await asyncio.create_subprocess_exec(
        *COFFER, "run", "--prefix", "nothing-here", "--", "sh", "-c",
        'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.1; done',
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"ready"
    proc.send_signal(signal.SIGTERM)  # to coffer's pid: the program is that process now
    out = await asyncio.wait_for(proc.stdout.read(), 10)
    assert await asyncio.wait_for(proc.wait(), 10) == 42 and b"got-term" in out


# -- PKI and leases ---------------------------------------------------------------------------------------

async def test_pki_issue_writes_the_certificate_and_a_private_key_file(
        tmp_path: Path, platform: Platform, api: Api, admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    ca = await make_ca(api)
    role = await make_role(api, ca["id"])
    out = tmp_path / "tls"
    run = await coffer(home, addr, "pki", "issue", role, "www.example.com", "--san", "api.example.com",
                       "--ttl", "24h", "--out", str(out), "-o", "table")
    assert run.code == 0, run.err
    assert "wrote" in run.out and "PRIVATE KEY" not in run.out + run.err
    key = out / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "PRIVATE KEY" in key.read_text()
    remember_secret(key.read_text().splitlines()[1])
    assert (out / "cert.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert ca["certificate"].strip() in (out / "chain.pem").read_text()
    proc = await asyncio.create_subprocess_exec("openssl", "x509", "-in", str(out / "cert.pem"), "-noout", "-ext",
                                                "subjectAltName", stdout=asyncio.subprocess.PIPE)
    sans, _ = await proc.communicate()
    assert b"api.example.com" in sans


async def test_lease_commands(tmp_path: Path, platform: Platform, api: Api, admin_identity: dict[str, Any],
                              rds: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    engine = name("cache")
    assert (await api.request("POST", "/v1/engines", json={"name": engine, "type": "redis", "config": rds}))[0] == 201
    assert (await api.request("PUT", f"/v1/engines/{engine}/roles/app",
                              json={"acl_rules": ["+ping"], "max_ttl": "2h"}))[0] == 201
    creds = await coffer(home, addr, "lease", "creds", engine, "app", "--ttl", "10m")
    assert creds.code == 0, creds.err
    lease = creds.json()
    remember_secret(lease["data"]["password"])
    assert lease["lease_duration"] == 600 and lease["data"]["username"].startswith("v-app-")
    table = await coffer(home, addr, "lease", "ls", "--engine", engine, "-o", "table")
    assert lease["lease_id"] in table.out and "active" in table.out
    renewed = await coffer(home, addr, "lease", "renew", lease["lease_id"], "--increment", "1h")
    assert renewed.code == 0 and renewed.json()["status"] == "active"
    revoked = await coffer(home, addr, "lease", "revoke", lease["lease_id"])
    assert revoked.code == 0 and revoked.out.strip() == f"revoked {lease['lease_id']}"
    gone = await coffer(home, addr, "lease", "renew", lease["lease_id"])
    assert gone.code == 6 and gone.err.startswith("error: lease_expired: ")
    assert (await coffer(home, addr, "lease", "revoke", "lea_nope")).code == 5


# -- access requests -------------------------------------------------------------------------------------

async def test_access_request_waits_for_two_approvals_given_from_the_shell(tmp_path: Path, platform: Platform,
                                                                           api: Api) -> None:
    addr = platform.url or ""
    policy = await requestable(api, ["secrets/cli-jit/**"], approvals=2)
    asker = await identity(api, ["secrets:read"])
    first, second = await approver(api, [policy]), await approver(api, [policy])

    def as_(who: dict[str, Any]) -> dict[str, str]:
        return {"COFFER_TOKEN": who["token"]}

    waiting = asyncio.create_task(coffer(tmp_path, addr, "access", "request", policy, "--for", "1h", "--reason",
                                         "INC-7 payments down", "--wait", "-o", "table", env=as_(asker)))
    made: list[Any] = []
    while not made:  # the request, once the command has made it
        assert not waiting.done(), waiting.result().err
        made = (await api.request("GET", f"/v1/access-requests?policy={policy}&status=pending"))[1]["items"]
        await asyncio.sleep(0.1)
    listed = await coffer(tmp_path, addr, "access", "ls", "--status", "pending", "-o", "json", env=as_(first))
    assert listed.code == 0 and [x["id"] for x in listed.json()] == [made[0]["id"]], listed.err
    one = await coffer(tmp_path, addr, "access", "approve", made[0]["id"], "--comment", "ok", "-o", "table",
                       env=as_(first))
    assert one.code == 0 and one.out.startswith(f"pending {made[0]['id']} ({policy} for 1h): 1/2"), one
    two = await coffer(tmp_path, addr, "access", "approve", made[0]["id"], "-o", "table", env=as_(second))
    assert two.code == 0 and two.out.startswith(f"approved {made[0]['id']}"), two.err
    done = await asyncio.wait_for(waiting, 30)
    assert done.code == 0, done.err
    assert f"requested {made[0]['id']}: {policy} for 1h, 2 approval(s) needed" in done.err
    assert "waiting for approval (0/2)" in done.err
    assert done.out.startswith(f"approved {made[0]['id']} ({policy} for 1h) by {second['id']}: granted until")
    again = await coffer(tmp_path, addr, "access", "deny", made[0]["id"], env=as_(second))
    assert again.code == 6 and again.err.startswith("error: version_conflict: ") and "status: approved" in again.err
    mine = await coffer(tmp_path, addr, "access", "ls", "--mine", "-o", "table", env=as_(asker))
    assert made[0]["id"] in mine.out and "2/2" in mine.out
    ended = await coffer(tmp_path, addr, "access", "cancel", made[0]["id"], "--comment", "fixed", "-o", "table",
                         env=as_(asker))
    assert ended.code == 0 and ended.out.startswith(f"cancelled {made[0]['id']} ({policy} for 1h) by {asker['id']}")


# -- status, completion ---------------------------------------------------------------------------------

async def test_status_and_completion(tmp_path: Path, platform: Platform) -> None:
    status = await coffer(tmp_path, platform.url or "", "status", "-o", "table")
    assert status.code == 0 and "lease" in status.out and "ok" in status.out
    for shell in ("bash", "zsh", "fish"):
        script = await coffer(tmp_path, platform.url or "", "completion", shell)
        assert script.code == 0 and "_COFFER_COMPLETE" in script.out
    helped = await coffer(tmp_path, platform.url or "", "--help")
    assert helped.code == 0 and "coffer run --prefix" in helped.out


# -- the Python client ----------------------------------------------------------------------------------------

async def test_client_errors_are_the_vocabularys_classes(platform: Platform, admin_identity: dict[str, Any]) -> None:
    from coffer_client import AsyncClient, Client, errors

    base = name("sdk")

    def sync_calls() -> None:  # the platform shares this test's event loop: the sync client runs in a thread
        with Client(platform.url) as client:
            client.login_client(admin_identity["client_id"], admin_identity["client_secret"])
            with pytest.raises(errors.SecretNotFound) as caught:
                client.get_secret("no/such/secret")
            assert isinstance(caught.value, errors.NotFound) and caught.value.status == 404
            assert caught.value.code == "secret_not_found" and (caught.value.request_id or "").startswith("req_")
            client.put_secret(f"{base}/a", remember_secret("v-" + base))
            with pytest.raises(errors.VersionConflict):
                client.put_secret(f"{base}/a", "x", expected_version=7)
            assert client.get_secret(f"{base}/a").value == "v-" + base
            assert [m.path for m in client.list_secrets(f"{base}/", page_size=1)] == [f"{base}/a"]

    await asyncio.to_thread(sync_calls)
    async with AsyncClient(platform.url) as aclient:
        await aclient.login_client(admin_identity["client_id"], admin_identity["client_secret"])
        for i in range(5):
            await aclient.put_secret(f"{base}/p{i}", "x")
        paths = [m.path async for m in aclient.list_secrets(f"{base}/", page_size=2)]
        assert paths == [f"{base}/a"] + [f"{base}/p{i}" for i in range(5)]  # three pages followed
        with pytest.raises(errors.InvalidPath):
            await aclient.get_secret("bad path!")
        # the administration calls, text and binary answers included
        ca = await aclient.create_ca({"name": name("ca"), "common_name": "SDK CA", "key_type": "ec-p256",
                                      "ttl": "24h"})
        assert (await aclient.ca_chain(ca["id"])).startswith("-----BEGIN CERTIFICATE-----")
        crl = await aclient.ca_crl(ca["id"])
        assert isinstance(crl, bytes) and crl[:1] == b"\x30"  # DER
        assert (await aclient.ca_crl(ca["id"], pem=True)).startswith("-----BEGIN X509 CRL-----")
        assert "coffer_" in await aclient.metrics()
        assert ca["id"] in [c["id"] async for c in aclient.list_cas()]
        policy = name("pol")
        await aclient.create_policy(policy, [{"effect": "allow", "paths": ["secrets/x/**"], "capabilities": ["read"]}])
        assert (await aclient.get_policy(policy))["name"] == policy
        await aclient.delete_policy(policy)
        with pytest.raises(errors.PolicyNotFound):
            await aclient.get_policy(policy)


async def test_client_waits_out_a_real_rate_limit(tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession) -> None:
    from coffer_client import AsyncClient, errors

    platform = await start_platform(tmp_path, None, pg_dsn, http_port=free_port(), rate_limits="read=2/s")
    try:
        api = await initialised(platform, http)
        async with AsyncClient(platform.url, api.token, retries=0) as impatient:
            with pytest.raises(errors.RateLimited) as caught:
                for _ in range(10):
                    await impatient.whoami()
            assert isinstance(caught.value, errors.Throttled) and caught.value.retry_after is not None
        async with AsyncClient(platform.url, api.token, retries=2) as patient:
            for _ in range(6):  # past the bucket: each wait is the server's Retry-After
                assert (await patient.whoami())["scopes"]
    finally:
        await platform.close()


async def test_export_saves_a_bundle_age_opens(tmp_path: Path, platform: Platform, api: Api,
                                               admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    base = name("cliexp")
    for key in ("db-password", "api.key"):
        status, _, _ = await api.request("PUT", f"/v1/secrets/{base}/{key}",
                                         json={"value": remember_secret(f"{key}-{base}")})
        assert status == 201
    keygen = await asyncio.create_subprocess_exec("age-keygen", "-o", str(tmp_path / "key.txt"),
                                                  stderr=asyncio.subprocess.PIPE)
    await keygen.communicate()
    public = next(line.split(": ")[1] for line in (tmp_path / "key.txt").read_text().splitlines()
                  if line.startswith("# public key"))
    (tmp_path / "recipient.txt").write_text(public + "\n")
    out = tmp_path / "prod.env.age"
    done = await coffer(home, addr, "export", "--prefix", f"{base}/", "--format", "dotenv",
                        "--recipient", str(tmp_path / "recipient.txt"), "-o", str(out))
    assert done.code == 0, done.err
    assert "started: 2 secrets" in done.err and done.out.startswith(f"wrote {out}: 2 secrets")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    opened = await asyncio.create_subprocess_exec("age", "-d", "-i", str(tmp_path / "key.txt"), str(out),
                                                  stdout=asyncio.subprocess.PIPE)
    text, _ = await opened.communicate()
    assert text.decode().splitlines() == [f'API_KEY="api.key-{base}"', f'DB_PASSWORD="db-password-{base}"']
    assert f"db-password-{base}" not in done.out + done.err
    bad = await coffer(home, addr, "export", "--prefix", f"{base}/", "--format", "json", "--recipient", "age1nope",
                       "-o", str(tmp_path / "x.age"))
    assert bad.code == 1 and bad.err.startswith("error: validation_error: ") and not (tmp_path / "x.age").exists()


# -- issue #28: paths as typed, age key files, errors that explain themselves, tables that fit ----------------

async def test_paths_are_sent_as_typed_and_dot_segments_are_refused(
        tmp_path: Path, platform: Platform, api: Api, admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    base = name("dots")
    assert (await api.request("PUT", f"/v1/secrets/{base}/y", json={"value": remember_secret("y-" + base)}))[0] == 201
    put = await coffer(home, addr, "secrets", "put", f"{base}/a/../b", "-", stdin="written?\n")
    assert put.code == 1 and put.err.startswith("error: invalid_path: "), put.err
    assert f"  path: {base}/a/../b" in put.err.splitlines()  # the path as typed, in the details
    assert (await api.request("GET", f"/v1/secrets/{base}/b"))[0] == 404  # nothing written
    for command in (["get"], ["versions"], ["rm"], ["rotate"], ["purge", "--yes"]):
        run = await coffer(home, addr, "secrets", *command, f"{base}/x/../y")
        assert run.code == 1 and run.err.startswith("error: invalid_path: ") and run.out == "", (command, run.err)
    for typed in (f"./{base}/y", f"{base}/./y", f"/{base}/y", f"{base}/y/"):
        assert (await coffer(home, addr, "secrets", "get", typed)).code == 1, typed
    status, kept, _ = await api.request("GET", f"/v1/secrets/{base}/y")
    assert status == 200 and kept["value"] == "y-" + base and kept["version"] == 1  # y untouched
    listed = await coffer(home, addr, "secrets", "ls", f"{base}/")
    assert [m["path"] for m in listed.json()] == [f"{base}/y"]

    # dots escaped by hand reach the gateway escaped, which refuses them too: never read as y
    from coffer_client import AsyncClient, errors

    async with AsyncClient(addr, api.token) as client:
        for raw in (f"/v1/secrets/{base}/x/%2E%2E/y", f"/v1/secrets/{base}/x/%2e%2e/y", f"/v1/secrets/{base}/%2E/y"):
            with pytest.raises(errors.InvalidPath):
                await client.request("GET", raw)
        with pytest.raises(errors.InvalidPath):
            await client.get_secret(f"{base}/x/%2E%2E/y")  # a typed "%" is sent as %25
        with pytest.raises(errors.InvalidPath):
            await client.put_secret(f"{base}/a/../b", "x")
    assert (await api.request("GET", f"/v1/secrets/{base}/b"))[0] == 404


async def test_export_to_the_key_file_age_keygen_writes(tmp_path: Path, platform: Platform, api: Api,
                                                        admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    base = name("cliage")
    status, _, _ = await api.request("PUT", f"/v1/secrets/{base}/token", json={"value": remember_secret("t-" + base)})
    assert status == 201
    key = tmp_path / "key.txt"
    keygen = await asyncio.create_subprocess_exec("age-keygen", "-o", str(key), stderr=asyncio.subprocess.PIPE)
    await keygen.communicate()
    identity_line = next(line for line in key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-1"))
    remember_secret(identity_line)
    out = tmp_path / "bundle.age"
    done = await coffer(home, addr, "export", "--prefix", f"{base}/", "--format", "json", "--recipient", str(key),
                        "-o", str(out))
    assert done.code == 0, done.err
    assert identity_line not in done.out + done.err
    opened = await asyncio.create_subprocess_exec("age", "-d", "-i", str(key), str(out), stdout=asyncio.subprocess.PIPE)
    text, _ = await opened.communicate()
    assert opened.returncode == 0 and json.loads(text) == {f"{base}/token": "t-" + base}

    # a recipients file: comments and blank lines allowed
    public = next(line.split(": ")[1] for line in key.read_text().splitlines() if line.startswith("# public key"))
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# ops laptop\n\n{public}\n")
    done = await coffer(home, addr, "export", "--prefix", f"{base}/", "--format", "dotenv", "--recipient",
                        str(recipients), "-o", str(tmp_path / "b2.age"))
    assert done.code == 0, done.err
    # refused before anything is asked of the server, the identity never echoed
    broken = tmp_path / "broken.txt"
    broken.write_text(identity_line[:-3] + "qqq\n")
    other = await asyncio.create_subprocess_exec("age-keygen", stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.PIPE)
    _, said = await other.communicate()  # age-keygen tells the public key on stderr
    two = tmp_path / "two.txt"
    two.write_text(f"{public}\n{said.decode().split('Public key: ')[1].strip()}\n")
    for bad, says in ((broken, "line 1 of"), (two, "names 2 recipients")):
        run = await coffer(home, addr, "export", "--prefix", f"{base}/", "--format", "json", "--recipient", str(bad),
                           "-o", str(tmp_path / "no.age"))
        assert run.code == 2 and says in run.err, run.err
        assert identity_line[16:] not in run.out + run.err and not (tmp_path / "no.age").exists()
    argv = await coffer(home, addr, "export", "--prefix", f"{base}/", "--format", "json", "--recipient", identity_line,
                        "-o", str(tmp_path / "no.age"))
    assert argv.code == 2 and "command line" in argv.err and identity_line[16:] not in argv.out + argv.err


async def test_without_a_token_coffer_says_to_log_in(tmp_path: Path, platform: Platform) -> None:
    for args in (["secrets", "ls"], ["whoami"], ["secrets", "get", "a/b"]):
        run = await coffer(tmp_path / "fresh", platform.url or "", *args)
        assert run.code == 3 and "not logged in" in run.err and "run `coffer login" in run.err, run.err
        assert run.out == ""
    other = await coffer(tmp_path / "fresh", platform.url or "", "--profile", "staging", "whoami")
    assert other.code == 3 and "`coffer --profile staging login" in other.err
    refused = await coffer(tmp_path / "fresh", platform.url or "", "whoami", env={"COFFER_TOKEN": "not-a-token"})
    assert refused.code == 3 and refused.err.startswith("error: token_invalid") and "COFFER_TOKEN" in refused.err


async def test_an_unreachable_address_is_named_with_the_reason_in_words(tmp_path: Path) -> None:
    refused_at = f"http://127.0.0.1:{free_port()}"
    for addr, reason in ((refused_at, "connection refused"),
                         ("http://no-such-host.invalid:8700", "name not resolved")):
        for args in (["status"], ["secrets", "ls"]):
            run = await coffer(tmp_path, addr, *args, env={"COFFER_TOKEN": "t"})
            assert run.code == 8, run.err
            assert run.err.startswith(f"error: unreachable: cannot reach {addr}: {reason}"), run.err
            assert "Error" not in run.err and "Exception" not in run.err  # no Python class names


async def test_an_error_shows_its_details_in_words(tmp_path: Path, platform: Platform, api: Api,
                                                   admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    base = name("why")
    bad = await coffer(home, addr, "export", "--prefix", f"{base}/", "--format", "json", "--recipient", "age1nope",
                       "-o", str(tmp_path / "x.age"))
    assert bad.code == 1 and bad.err.startswith("error: validation_error: ")
    assert "  recipient: must be an age X25519 recipient (age1…) or an ssh-ed25519 public key" in bad.err.splitlines()
    status, made, _ = await api.request("POST", "/v1/secret-policies", json={
        "name": name("sp"), "path_pattern": f"{base}/**", "require_expiry": True})
    assert status == 201
    ruled = await coffer(home, addr, "secrets", "put", f"{base}/db", "v")
    assert ruled.code == 1 and ruled.err.startswith("error: validation_error: "), ruled.err
    lines = ruled.err.splitlines()
    assert f"  policy: {made['name']}" in lines and "  rule: require_expiry" in lines
    assert (await coffer(home, addr, "secrets", "put", f"{base}/db", "v", "--ttl", "1h")).code == 0


async def test_tables_fit_the_terminal_and_the_path_shrinks_last(tmp_path: Path, platform: Platform, api: Api,
                                                                 admin_identity: dict[str, Any]) -> None:
    home, addr = await logged_in(tmp_path, platform, admin_identity), platform.url or ""
    base = name("wide")
    long_path = f"{base}/payments/prod/eu-west-1/db-primary"  # 46 characters
    for path, kind in ((long_path, "connection_string"), (f"{base}/k", "password")):
        assert (await api.request("PUT", f"/v1/secrets/{path}", json={
            "value": "v", "secret_type": kind, "ttl": "30d"}))[0] == 201
    wide = await coffer(home, addr, "secrets", "ls", f"{base}/", "-o", "table", env={"COLUMNS": "200"})
    assert wide.code == 0 and max(len(line) for line in wide.out.splitlines()) < 200
    for columns in (100, 80):
        run = await coffer(home, addr, "secrets", "ls", f"{base}/", "-o", "table", env={"COLUMNS": str(columns)})
        assert run.code == 0, run.err
        lines = run.out.splitlines()
        assert max(len(line) for line in lines) <= columns, run.out
        assert any(long_path in line for line in lines), run.out  # the path whole, on one line: the others wrap
    narrow = await coffer(home, addr, "secrets", "ls", f"{base}/", "-o", "table", env={"COLUMNS": "50"})
    assert max(len(line) for line in narrow.out.splitlines()) <= 50
    assert long_path in "".join(line.split("│")[1].strip() for line in narrow.out.splitlines()
                                if line.startswith("│"))  # folded, not cut
    piped = await coffer(home, addr, "secrets", "ls", f"{base}/", "-o", "table")  # no COLUMNS: a row is a line
    assert any(long_path in line and "connection_string" in line for line in piped.out.splitlines())
