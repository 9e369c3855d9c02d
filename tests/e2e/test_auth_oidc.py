"""``oidc`` auth methods (api.md §10): people sign in through a real OpenID provider (node's
``oidc-provider``, tests/oidc) — Authorization Code with PKCE and a nonce, its login and consent pages
submitted by the test — and get a Coffer token holding their role's policies, plus those of their groups.
Every refusal (state, replayed code, nonce, redirect URI, verifier) is 401 with its reason; the client
secret is never answered nor logged. ``coffer login --oidc`` is driven as a subprocess in test_cli_oidc.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from services.gateway.methods.oidc import challenge_of
from services.platform import Platform
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.method_helpers import put_role
from tests.e2e.oidc_helpers import CLIENT_ID, LOOPBACK, REGISTERED, Provider, code_and_state, pkce, serve_provider
from tests.e2e.oidc_helpers import sign_in as browser_sign_in
from tests.e2e.test_auth_methods import policy
from tests.e2e.test_cli import COFFER
from tests.e2e.test_secrets import unique

CALLBACK = "http://127.0.0.1:47123/callback"  # a loopback redirect on some port (RFC 8252)


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    """Both run modes: a person signs in through the gateway whichever way the services talk."""
    async with own_platform(request.param, tmp_path_factory.mktemp(f"oidc-{request.param}"), pg_dsn) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def provider() -> AsyncIterator[Provider]:
    async for served in serve_provider():
        yield served


@pytest.fixture(scope="module")
async def setup(api: Api, provider: Provider) -> dict[str, Any]:
    """A method on the provider; secrets ``allowed`` and ``admins``; role ``people`` reads ``allowed`` and
    gives the ``admins`` group the policy that reads ``admins``; role ``ops-only`` binds the groups claim."""
    method = f"sso-{secrets.token_hex(3)}"
    status, body, _ = await api.request("POST", "/v1/auth/methods", json={
        "name": method, "type": "oidc", "config": {
            "issuer": provider.url, "client_id": CLIENT_ID, "client_secret": provider.client_secret,
            "scopes": ["openid", "email", "groups"], "redirect_uris": [REGISTERED]}})
    assert status == 201, body
    assert "client_secret" not in body["config"] and body["type"] == "oidc"
    made = await people(api, method, "sso")
    await put_role(api, method, "ops-only", user_claim="email", groups_claim="groups",
                   bound_claims={"groups": ["ops"]}, scopes=["secrets:read"], policies=[made["admins"]])
    return made


async def people(api: Api, method: str, prefix: str) -> dict[str, Any]:
    """Secrets ``allowed`` and ``admins`` under a new path, and the role ``people`` of ``method``: it reads
    ``allowed`` and gives the ``admins`` group the policy that reads ``admins`` (its name: ``admins``)."""
    base, values = unique(prefix), {}
    for leaf in ("allowed", "admins"):
        values[leaf] = remember_secret(f"{leaf}-{secrets.token_hex(8)}")
        status, made, _ = await api.request("PUT", f"/v1/secrets/{base}/{leaf}/db", json={"value": values[leaf]})
        assert status == 201, made
    allowed = await policy(api, [f"secrets/{base}/allowed/**"])
    admins = await policy(api, [f"secrets/{base}/admins/**"])
    await put_role(api, method, "people", user_claim="email", groups_claim="groups", scopes=["secrets:read"],
                   policies=[allowed], group_policies={"admins": [admins]}, ttl="30m")
    return {"method": method, "base": base, "values": values, "admins": admins}


async def authorize(api: Api, method: str, role: str, redirect_uri: str = CALLBACK, state: str | None = None,
                    verifier: str | None = None) -> tuple[int, Any, str, str]:
    """``GET …/authorize``: (status, body, the Location, the verifier); the state and verifier given or new."""
    verifier, challenge = pkce() if verifier is None else (verifier, challenge_of(verifier))
    query = {"role": role, "redirect_uri": redirect_uri, "state": state or secrets.token_urlsafe(24),
             "code_challenge": challenge}
    status, body, headers = await api.request("GET", f"/v1/auth/methods/{method}/authorize?{urlencode(query)}",
                                              token=None, allow_redirects=False)
    return status, body, headers.get("Location", ""), verifier


async def callback(api: Api, method: str, code: str, state: str, verifier: str,
                   redirect_uri: str = CALLBACK) -> tuple[int, Any]:
    status, body, _ = await api.request("POST", f"/v1/auth/methods/{method}/callback", token=None, json={
        "code": code, "state": state, "code_verifier": verifier, "redirect_uri": redirect_uri})
    if status == 200:
        remember_secret(body["access_token"])
    return status, body


async def sign_in(api: Api, provider: Provider, method: str, login: str = "alice",
                  role: str = "people") -> tuple[str, str, str]:
    """authorize + the provider's pages: (code, state, verifier)."""
    status, body, location, verifier = await authorize(api, method, role)
    assert status == 302, body
    code, state = code_and_state(await browser_sign_in(location, provider.url, login))
    return code, state, verifier


def refused(status: int, body: Any, reason: str) -> None:
    assert status == 401, body
    err = body["error"]
    assert err["code"] == "authentication_required" and err["details"]["reason"] == reason, body


async def read(api: Api, token: str, setup: dict[str, Any], leaf: str) -> int:
    status, body, _ = await api.request("GET", f"/v1/secrets/{setup['base']}/{leaf}/db", token=token)
    if status == 200:
        assert body["value"] == setup["values"][leaf]
    return status


async def test_the_authorize_redirect_carries_pkce_a_nonce_and_the_methods_client(
        api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    status, body, location, _ = await authorize(api, setup["method"], "people", state="s" * 20)
    assert status == 302, body
    assert location.startswith(provider.url + "/auth?")
    q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert q["response_type"] == "code" and q["client_id"] == CLIENT_ID and q["redirect_uri"] == CALLBACK
    assert q["scope"] == "openid email groups" and q["state"] == "s" * 20
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43 and len(q["nonce"]) >= 32
    status, body, _, _ = await authorize(api, setup["method"], "people", state="s" * 20)
    refused(status, body, "state")  # a state already pending


async def test_a_code_and_pkce_round_trip_gives_a_token_reading_what_the_role_allows(
        api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    code, state, verifier = await sign_in(api, provider, setup["method"], "alice")
    status, body = await callback(api, setup["method"], code, state, verifier)
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["scope"] == "secrets:read" and body["expires_in"] == 1800
    token = body["access_token"]
    assert await read(api, token, setup, "allowed") == 200
    assert await read(api, token, setup, "admins") == 403  # alice is in no group
    status, me, _ = await api.request("GET", "/v1/auth/whoami", token=token)
    assert status == 200 and me["identity"]["kind"] == "external", me
    # the same state again: used once
    refused(*await callback(api, setup["method"], code, state, verifier), "state")


async def test_a_wrong_state_a_replayed_code_and_a_wrong_verifier_are_refused(
        api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    m = setup["method"]
    code, state, verifier = await sign_in(api, provider, m, "dave")
    refused(*await callback(api, m, code, secrets.token_urlsafe(24), verifier), "state")
    refused(*await callback(api, m, code, state, pkce()[0]), "code_verifier")
    refused(*await callback(api, m, code, state, verifier), "state")  # a refused callback spent the state too
    # a code redeemed once, then again under a new pending sign-in with the same verifier: the provider refuses
    code, state, verifier = await sign_in(api, provider, m, "dave")
    status, body = await callback(api, m, code, state, verifier)
    assert status == 200, body
    again = secrets.token_urlsafe(24)
    status, body, _, _ = await authorize(api, m, "people", state=again, verifier=verifier)
    assert status == 302, body
    refused(*await callback(api, m, code, again, verifier), "code")


async def test_an_id_token_with_another_sign_ins_nonce_is_refused(
        api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    """Sign-in A's code finished under sign-in B's state (same verifier): the ID token's nonce is A's."""
    m = setup["method"]
    status, body, location_a, verifier = await authorize(api, m, "people")
    assert status == 302, body
    state_b = secrets.token_urlsafe(24)
    status, body, location_b, _ = await authorize(api, m, "people", state=state_b, verifier=verifier)
    assert status == 302, body
    assert parse_qs(urlsplit(location_a).query)["nonce"] != parse_qs(urlsplit(location_b).query)["nonce"]
    code_a, _state_a = code_and_state(await browser_sign_in(location_a, provider.url, "erin"))
    refused(*await callback(api, m, code_a, state_b, verifier), "nonce")


async def test_a_redirect_uri_not_allowed_is_refused(api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    m = setup["method"]
    for uri in ("https://evil.example/callback", "http://localhost:8080/callback", "http://10.0.0.1/callback",
                "https://coffer.example.test/oidc/callback/other", "http://127.0.0.1:1/cb#frag"):
        status, body, location, _ = await authorize(api, m, "people", redirect_uri=uri)
        refused(status, body, "redirect_uri")
        assert not location
    # the method's own redirect URI is allowed (the provider sends the browser there)
    status, body, location, _ = await authorize(api, m, "people", redirect_uri=REGISTERED)
    assert status == 302 and parse_qs(urlsplit(location).query)["redirect_uri"] == [REGISTERED], body
    # a callback naming another redirect URI than its sign-in began with
    code, state, verifier = await sign_in(api, provider, m, "frank")
    refused(*await callback(api, m, code, state, verifier, redirect_uri=LOOPBACK), "redirect_uri")


async def test_groups_map_to_policies(api: Api, provider: Provider, setup: dict[str, Any]) -> None:
    m = setup["method"]
    code, state, verifier = await sign_in(api, provider, m, "grace+admins")
    status, body = await callback(api, m, code, state, verifier)
    assert status == 200, body
    assert await read(api, body["access_token"], setup, "allowed") == 200
    assert await read(api, body["access_token"], setup, "admins") == 200  # group_policies: admins
    # a role binding the groups claim: an ops member gets in, another is refused
    code, state, verifier = await sign_in(api, provider, m, "heidi+ops", "ops-only")
    status, body = await callback(api, m, code, state, verifier)
    assert status == 200, body
    assert await read(api, body["access_token"], setup, "admins") == 200
    code, state, verifier = await sign_in(api, provider, m, "ivan+dev", "ops-only")
    refused(*await callback(api, m, code, state, verifier), "claims")


async def test_unknown_roles_and_methods_are_role_not_found(api: Api, setup: dict[str, Any]) -> None:
    status, body, _, _ = await authorize(api, setup["method"], "nobody")
    assert status == 404 and body["error"]["code"] == "role_not_found", body
    status, body, _, _ = await authorize(api, "no-such-method", "people")
    assert status == 404 and body["error"]["code"] == "role_not_found", body
    status, body, _ = await api.request("GET", f"/v1/auth/methods/{setup['method']}/authorize?role=people",
                                        token=None, allow_redirects=False)
    assert status == 422 and body["error"]["code"] == "validation_error", body


async def test_the_client_secret_is_sealed_never_answered(api: Api, provider: Provider, setup: dict[str, Any],
                                                          platform: Platform) -> None:
    m = setup["method"]
    status, body, _ = await api.request("GET", f"/v1/auth/methods/{m}")
    assert status == 200 and provider.client_secret not in str(body) and "client_secret" not in body["config"]
    status, body, _ = await api.request("GET", "/v1/auth/methods")
    assert status == 200 and provider.client_secret not in str(body)
    # a patch that leaves the secret out keeps it: a sign-in still redeems its code
    status, body, _ = await api.request("PATCH", f"/v1/auth/methods/{m}", json={"config": {"leeway": "30s"}})
    assert status == 200 and body["config"]["leeway"] == "30s" and provider.client_secret not in str(body), body
    code, state, verifier = await sign_in(api, provider, m, "judy")
    status, body = await callback(api, m, code, state, verifier)
    assert status == 200, body
    # a method made without its secret is refused
    status, body, _ = await api.request("POST", "/v1/auth/methods", json={
        "name": f"sso-{secrets.token_hex(3)}", "type": "oidc",
        "config": {"issuer": provider.url, "client_id": CLIENT_ID, "redirect_uris": [REGISTERED]}})
    assert status == 422 and body["error"]["code"] == "validation_error", body


async def test_coffer_login_oidc_signs_in_on_a_loopback_redirect_and_stores_the_token(
        api: Api, provider: Provider, setup: dict[str, Any], platform: Platform, tmp_path: Path) -> None:
    """The CLI in a subprocess (no browser opens: it prints the URL); the test is the browser, and the
    provider sends it back to the CLI's listener on 127.0.0.1."""
    home = tmp_path / "cfg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update({"XDG_CONFIG_HOME": str(home), "COFFER_ADDR": platform.url or "", "BROWSER": "false"})
    proc = await asyncio.create_subprocess_exec(*COFFER, "login", "--oidc", setup["method"], "--role", "people",
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        url, seen = None, []
        assert proc.stderr is not None
        while url is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, seen
            seen.append(line)
            if line.strip().startswith("http"):
                url = line.strip()
        assert f"/v1/auth/methods/{setup['method']}/authorize?" in url
        home_url = await browser_sign_in(url, provider.url, "kim+admins", follow_home=True)
        assert home_url.startswith("http://127.0.0.1:") and "/callback?" in home_url
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
    token = stored_token(proc.returncode, out, err, home)
    assert await read(api, token, setup, "admins") == 200  # kim is in admins


def stored_token(returncode: int | None, out: bytes, err: bytes, home: Path) -> str:
    """What a ``coffer login --oidc`` that ended did: exit 0, ``whoami`` of an external identity on stdout
    (JSON: stdout is not a terminal), and the token it stored in credentials.toml (returned)."""
    assert returncode == 0, (out, err)
    assert json.loads(out)["identity"]["kind"] == "external"
    with (home / "coffer" / "credentials.toml").open("rb") as f:
        stored = tomllib.load(f)
    return remember_secret(next(iter(stored.values()))["token"])


async def test_coffer_login_oidc_refuses_a_half_given_choice(platform: Platform, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update({"XDG_CONFIG_HOME": str(tmp_path), "COFFER_ADDR": platform.url or ""})
    proc = await asyncio.create_subprocess_exec(*COFFER, "login", "--oidc", "sso", env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and b"--role" in err
