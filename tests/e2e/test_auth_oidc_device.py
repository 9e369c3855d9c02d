# ruff: noqa: F811  (pytest fixtures imported from test_auth_oidc are parameters here)
"""The device authorization grant of ``oidc`` methods (RFC 8628, api.md §10) against a real OpenID provider
(node's ``oidc-provider``, tests/oidc), in both run modes: Coffer asks the provider for a device code and
answers a handle of its own; the test does the person's part — opens the verification URI, enters the user
code, confirms, signs in, consents (or aborts) — while the API, or ``coffer login --oidc … --device``, polls.
Pending, too-fast, refused, expired, reused and foreign handles; a provider or client without the grant; the
bound on pending sign-ins; and no code or token in a log line, an answer or the audit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.gateway.methods.device import MAX_PENDING
from services.platform import Platform
from tests.conftest import LOG_LINES, Api, remember_secret
from tests.e2e.iam_helpers import identity
from tests.e2e.method_helpers import put_role
from tests.e2e.oidc_helpers import CLIENT_ID, Provider, device_sign_in, serve_provider
from tests.e2e.test_auth_oidc import api, people, platform, read, stored_token  # noqa: F401 - both run modes' platforms
from tests.e2e.test_cli import COFFER
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_tenants import EVERYTHING, tenant

#: every code, handle and token a test here saw: none may reach a log line, an answer's text or the audit
SEEN: list[str] = []


@pytest.fixture(scope="module")
async def provider(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Provider]:
    async for served in serve_provider(plain=True, record=tmp_path_factory.mktemp("oidc") / "device-codes"):
        yield served


async def make_method(api: Api, provider: Provider, *, issuer: str | None = None, client_id: str = CLIENT_ID,
                      name: str | None = None, token: str | None = "default") -> str:
    method = name or f"dev-{secrets.token_hex(3)}"
    status, body, _ = await api.request("POST", "/v1/auth/methods", token=token, json={
        "name": method, "type": "oidc", "config": {
            "issuer": issuer or provider.url, "client_id": client_id, "client_secret": provider.client_secret,
            "scopes": ["openid", "email", "groups"]}})
    assert status == 201, body
    return method


@pytest.fixture(scope="module")
async def setup(api: Api, provider: Provider) -> dict[str, Any]:
    """A method on the provider; role ``people`` reads secret ``allowed`` and gives group ``admins`` the
    policy that reads ``admins``."""
    return await people(api, await make_method(api, provider), "dev")


async def start(api: Api, method: str, role: str = "people", **kwargs: Any) -> tuple[int, Any]:
    status, body, _ = await api.request("POST", f"/v1/auth/methods/{method}/device", token=None,
                                        json={"role": role}, **kwargs)
    if status == 200:
        SEEN.extend((remember_secret(body["device_code"]), remember_secret(body["user_code"])))
    return status, body


async def poll(api: Api, method: str, handle: str, **kwargs: Any) -> tuple[int, Any, Any]:
    status, body, headers = await api.request("POST", f"/v1/auth/methods/{method}/device/token", token=None,
                                              json={"device_code": handle}, **kwargs)
    if status == 200:
        SEEN.append(remember_secret(body["access_token"]))
    return status, body, headers


def refused(answer: tuple[int, Any, Any], reason: str) -> dict[str, Any]:
    err = assert_envelope(*answer, "authentication_required")
    assert err["details"]["reason"] == reason, err
    return err


async def gateway_sql(platform: Platform, pg_dsn: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'SET search_path TO "{platform.values["schema_prefix"]}gateway"')
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_a_device_sign_in_gives_a_token_reading_what_the_role_allows(
        api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    m = setup["method"]
    status, body = await start(api, m)
    assert status == 200, body
    assert set(body) == {"device_code", "user_code", "verification_uri", "verification_uri_complete",
                         "expires_in", "interval"}, body
    assert body["verification_uri"] == f"{provider.url}/device" and body["interval"] == 1, body
    assert 0 < body["expires_in"] <= 600 and len(body["device_code"]) == 43
    assert body["device_code"] not in provider.device_codes()  # Coffer's handle, not the provider's code
    assert refused(await poll(api, m, body["device_code"]), "authorization_pending")["details"]["interval"] == 1
    due = time.monotonic() + 1  # the interval
    page = await device_sign_in(body["verification_uri"], body["user_code"], provider.url, "lena+admins")
    assert "Sign-in Success" in page
    await asyncio.sleep(max(0.0, due - time.monotonic()))
    status, token, _ = await poll(api, m, body["device_code"])
    assert status == 200, token
    assert token["token_type"] == "Bearer" and token["scope"] == "secrets:read" and token["expires_in"] == 1800
    assert await read(api, token["access_token"], setup, "allowed") == 200
    assert await read(api, token["access_token"], setup, "admins") == 200  # lena is in admins
    status, me, _ = await api.request("GET", "/v1/auth/whoami", token=token["access_token"])
    assert status == 200 and me["identity"]["kind"] == "external", me
    refused(await poll(api, m, body["device_code"]), "expired_token")  # a handle works once
    assert f"POST /v1/auth/methods/{m}/device/token" in await audited(api, m)


async def audited(api: Api, method: str) -> set[str]:
    status, page, _ = await api.request("GET", f"/v1/audit/events?path_prefix=auth-methods/{method}&limit=1000")
    assert status == 200, page
    return {e["action"] for e in page["items"]}


async def test_polling_faster_than_the_interval_is_slow_down_and_lengthens_it(
        api: Api, setup: dict[str, Any]) -> None:
    m = setup["method"]
    status, body = await start(api, m)
    assert status == 200, body
    refused(await poll(api, m, body["device_code"]), "authorization_pending")
    assert refused(await poll(api, m, body["device_code"]), "slow_down")["details"]["interval"] == 6
    assert refused(await poll(api, m, body["device_code"]), "slow_down")["details"]["interval"] == 11


async def test_a_sign_in_refused_at_the_provider_is_access_denied_and_audited(
        api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    m = setup["method"]
    status, body = await start(api, m)
    assert status == 200, body
    page = await device_sign_in(body["verification_uri"], body["user_code"], provider.url, "mia", deny=True)
    assert "interrupted" in page
    refused(await poll(api, m, body["device_code"]), "access_denied")
    refused(await poll(api, m, body["device_code"]), "expired_token")  # the sign-in is over
    actions = await audited(api, m)
    assert f"POST /v1/auth/methods/{m}/device/token (access_denied)" in actions, actions
    assert not any("authorization_pending" in a or "slow_down" in a for a in actions), actions


async def test_unknown_expired_foreign_and_malformed_handles(
        api: Api, provider: Provider, setup: dict[str, Any], platform: Platform, pg_dsn: str) -> None:
    """An unknown handle, an expired one, one of another method or of another tenant: the same answer,
    and the foreign ones still work where they belong."""
    m = setup["method"]
    status, body = await start(api, m)
    assert status == 200, body
    handle = body["device_code"]
    unknown = refused(await poll(api, m, secrets.token_urlsafe(32)), "expired_token")
    other_method = await make_method(api, provider)
    foreign = refused(await poll(api, other_method, handle), "expired_token")
    other = await tenant(api)
    admin = await identity(api, ["admin"], EVERYTHING, tenant=other["id"])
    await make_method(api, provider, name=m, token=admin["token"])  # the same method name in the other tenant
    cross = refused(await poll(api, m, handle, headers={"X-Tenant-ID": other["id"]}), "expired_token")
    for err in (foreign, cross):
        assert {k: v for k, v in err.items() if k != "request_id"} == \
            {k: v for k, v in unknown.items() if k != "request_id"}
    refused(await poll(api, m, handle), "authorization_pending")  # still pending where it belongs
    await gateway_sql(platform, pg_dsn, "UPDATE auth_device SET expires_at = now() - interval '1 second'"
                      " WHERE handle_hash = $1", hashlib.sha256(handle.encode()).digest())
    refused(await poll(api, m, handle), "expired_token")
    for bad in ("short", "x" * 43 + "=", handle + "A", 42, None):
        status, err, headers = await api.request("POST", f"/v1/auth/methods/{m}/device/token", token=None,
                                                 json={"device_code": bad})
        assert_envelope(status, err, headers, "validation_error")
    status, err, headers = await poll(api, "no-such-method", handle)
    assert_envelope(status, err, headers, "role_not_found")
    status, err = await start(api, m, "nobody")
    assert status == 404 and err["error"]["code"] == "role_not_found", err
    status, err = await start(api, "no-such-method")
    assert status == 404 and err["error"]["code"] == "role_not_found", err


async def test_a_provider_or_client_without_the_grant_is_invalid_config_and_keeps_nothing(
        api: Api, provider: Provider, platform: Platform, pg_dsn: str) -> None:
    plain = await make_method(api, provider, issuer=provider.plain_url)
    web_only = await make_method(api, provider, client_id="coffer-web")
    for method, reason in ((plain, "no device_authorization_endpoint"), (web_only, "invalid_request")):
        await put_role(api, method, "people", user_claim="email", scopes=["secrets:read"])
        status, body = await start(api, method)
        assert status == 400 and body["error"]["code"] == "invalid_config", body
        assert body["error"]["details"]["reason"] == reason, body
    rows = await gateway_sql(platform, pg_dsn, "SELECT count(*) FROM auth_device WHERE method = ANY($1::text[])",
                             [plain, web_only])
    assert rows[0][0] == 0


async def test_the_pending_device_sign_ins_of_a_method_are_bounded(
        api: Api, provider: Provider, platform: Platform, pg_dsn: str) -> None:
    method = await make_method(api, provider)
    await put_role(api, method, "people", user_claim="email", scopes=["secrets:read"])
    await gateway_sql(platform, pg_dsn, "INSERT INTO auth_device SELECT sha256(i::text::bytea), m.tenant_id, m.name,"
                      " 'people', 'n', '\\x00', 5, now(), now() + interval '10 minutes'"
                      " FROM auth_methods m, generate_series(1, $2) i WHERE m.name = $1", method, MAX_PENDING)
    status, body, headers = await api.request("POST", f"/v1/auth/methods/{method}/device", token=None,
                                              json={"role": "people"})
    assert_envelope(status, body, headers, "rate_limited")
    assert headers["Retry-After"] == "60"
    await gateway_sql(platform, pg_dsn, "DELETE FROM auth_device WHERE method = $1", method)
    assert (await start(api, method))[0] == 200


async def test_coffer_login_oidc_device_prints_the_code_polls_and_stores_the_token(
        api: Api, provider: Provider, setup: dict[str, Any], platform: Platform, tmp_path: Path) -> None:
    """The CLI in a subprocess (no browser opens); the test is the person, on "another device"."""
    home = tmp_path / "cfg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update({"XDG_CONFIG_HOME": str(home), "COFFER_ADDR": platform.url or "", "BROWSER": "false"})
    proc = await asyncio.create_subprocess_exec(*COFFER, "login", "--oidc", setup["method"], "--role", "people",
                                                "--device", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stderr is not None
        seen: list[str] = []
        while not any(line.startswith("Waiting") for line in seen):
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, seen
            seen.append(line.strip())
        uri = next(line.split()[4] for line in seen if line.startswith("To sign in, open"))
        code = next(line for line in seen if line and "-" in line and " " not in line)
        SEEN.append(remember_secret(code))
        assert uri == f"{provider.url}/device", seen
        assert "Sign-in Success" in await device_sign_in(uri, code, provider.url, "noah+admins")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    token = stored_token(proc.returncode, out, err, home)
    SEEN.append(token)
    assert await read(api, token, setup, "admins") == 200
    proc = await asyncio.create_subprocess_exec(*COFFER, "login", "--device", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"--oidc" in err


async def test_no_code_handle_or_token_reaches_a_log_line_an_answer_or_the_audit(
        api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    """Every handle, user code and token the tests above saw, and every device code the provider issued."""
    assert (await start(api, setup["method"]))[0] == 200  # one at least, were this test run alone
    issued = provider.device_codes()
    assert issued and SEEN
    status, page, _ = await api.request("GET", "/v1/audit/events?limit=1000")
    assert status == 200, page
    text = json.dumps(page)
    logged = "\n".join(LOG_LINES)
    assert LOG_LINES
    leaked = [v for v in [*issued, *SEEN] if v in logged or v in text]
    assert not leaked, f"{len(leaked)} codes or tokens reached a log line or the audit"
