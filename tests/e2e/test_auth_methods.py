"""``jwt`` auth methods through the gateway (api.md §10), in both run modes: a local OpenID issuer on
127.0.0.1 (discovery + JWKS; RSA, EC and Ed25519 keys) whose tokens log in with a role and get a Coffer
token that holds the role's scopes and policies — and every way a token is refused.

The platform fetches an issuer's keys again on an unknown ``kid`` at most once per
``auth_keys_refetch_interval``: 60 s by default, ``REFETCH`` s here so that a rotation can be shown in a
test's time (the bound is the same code; tests/integration/test_jwt_keys.py holds it at the minute).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from services.platform import Platform
from tests.conftest import Api, free_port, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.method_helpers import RSA_NEXT, Issuer, login, make_method, put_role, serve_issuer
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_secrets import unique
from tests.e2e.test_tenants import EVERYTHING, SECRETS, tenant

REFETCH = 3.0


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn,
                            auth_keys_refetch_interval=REFETCH) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[Issuer]:
    async for served in serve_issuer():
        yield served


async def policy(api: Api, paths: list[str]) -> str:
    policy_name = name("p")
    status, body, _ = await api.request("POST", "/v1/policies", json={
        "name": policy_name, "rules": [allow(paths, ["read", "list"])]})
    assert status == 201, body
    return policy_name


@pytest.fixture(scope="module")
async def setup(api: Api, issuer: Issuer) -> dict[str, Any]:
    """A method by discovery; secrets ``allowed`` and ``denied``; a role whose policy reads ``allowed``."""
    iss_name, iss_url = issuer.add()
    method = await make_method(api, iss_url)
    base = unique("am")
    values = {}
    for leaf in ("allowed", "denied"):
        values[leaf] = remember_secret(f"{leaf}-{secrets.token_hex(8)}")
        status, body, _ = await api.request("PUT", f"/v1/secrets/{base}/{leaf}/db", json={"value": values[leaf]})
        assert status == 201, body
    allowed = await policy(api, [f"secrets/{base}/allowed/**"])
    denied = await policy(api, [f"secrets/{base}/denied/**"])
    role = await put_role(api, method["name"], "deploy", bound_audiences=["coffer"], bound_claims={"team": ["pay*"]},
                          scopes=["secrets:read"], policies=[allowed], ttl="10m")
    assert role["policies"] == [allowed] and role["ttl"] == "10m"
    return {"issuer": iss_name, "method": method["name"], "base": base, "values": values,
            "allowed": allowed, "denied": denied}


async def read(api: Api, token: str, path: str) -> tuple[int, Any, Any]:
    return await api.request("GET", f"/v1/secrets/{path}", token=token)


async def test_a_login_per_algorithm_family_holds_the_roles_scopes_and_policies(
        api: Api, issuer: Issuer, setup: dict[str, Any]) -> None:
    ids = set()
    for kid in ("rsa-1", "ec-1", "ed-1"):  # RS256, ES256, EdDSA
        token = issuer.mint(setup["issuer"], {"team": "payments"}, kid=kid)
        status, body, _ = await login(api, setup["method"], "deploy", token)
        assert status == 200, (kid, body)
        assert body["token_type"] == "Bearer" and body["scope"] == "secrets:read" and body["expires_in"] == 600
        coffer = body["access_token"]
        status, secret, _ = await read(api, coffer, f"{setup['base']}/allowed/db")
        assert status == 200 and secret["value"] == setup["values"]["allowed"], secret
        status, err, headers = await read(api, coffer, f"{setup['base']}/denied/db")
        assert_envelope(status, err, headers, "access_denied")
        status, err, headers = await api.request("PUT", f"/v1/secrets/{setup['base']}/allowed/db", token=coffer,
                                                 json={"value": "x"})
        assert_envelope(status, err, headers, "insufficient_scope")
        status, me, _ = await api.request("GET", "/v1/auth/whoami", token=coffer)
        assert status == 200, me
        ids.add(me["identity"]["id"])
    assert len(ids) == 1  # one external identity per (method, user claim)


async def test_each_refusal_is_authentication_required_with_its_reason(
        api: Api, issuer: Issuer, setup: dict[str, Any]) -> None:
    iss, now = setup["issuer"], int(time.time())
    good = {"team": "payments"}
    cases = {
        "signature": [issuer.mint(iss, good, key=RSA_NEXT),  # another key under the issuer's kid
                      issuer.mint(iss, good)[:-4] + "AAAA",
                      "not.a.jwt", "a" * 100],
        "issuer": [issuer.mint(iss, good, iss=issuer.url("elsewhere"))],
        "expired": [issuer.mint(iss, good, exp=now - 3600, iat=now - 7200)],
        "not_yet_valid": [issuer.mint(iss, good, nbf=now + 3600)],
        "audience": [issuer.mint(iss, good, aud="another-service"), issuer.mint(iss, good, aud=None)],
        "claims": [issuer.mint(iss, {"team": "ops"}), issuer.mint(iss, {}), issuer.mint(iss, good, exp=None)],
        "algorithm": [remember_secret(jwt.encode({"iss": issuer.url(iss), "aud": "coffer", "sub": "x", "exp": now + 60,
                                                  "team": "payments"}, None, algorithm="none")),
                      issuer.mint(iss, good, key=secrets.token_bytes(32), alg="HS256"),
                      issuer.mint(iss, good, kid="ec-1", key=RSA_NEXT, alg="RS256")],  # RS256 under an EC key
    }
    for reason, tokens in cases.items():
        for token in tokens:
            status, body, headers = await login(api, setup["method"], "deploy", token)
            err = assert_envelope(status, body, headers, "authentication_required")
            assert err["details"] == {"reason": reason}, (reason, err)
            assert token not in str(body)


async def test_an_unknown_role_method_or_tenant_is_role_not_found(
        api: Api, issuer: Issuer, setup: dict[str, Any]) -> None:
    token = issuer.mint(setup["issuer"], {"team": "payments"})
    for method, role, tenant_id in ((setup["method"], "nope", None), ("nope", "deploy", None),
                                    (setup["method"], "deploy", "ten_0000000000"),
                                    (setup["method"], "deploy", "not a tenant ✗")):
        status, body, headers = await login(api, method, role, token, tenant_id)
        err = assert_envelope(status, body, headers, "role_not_found")
        assert err["details"] == {"role": role}


async def test_a_flood_of_made_up_kids_fetches_once_per_interval_and_a_rotated_key_logs_in(
        api: Api, issuer: Issuer) -> None:
    iss_name, iss_url = issuer.add()
    method = (await make_method(api, iss_url))["name"]
    await put_role(api, method, "r", scopes=["secrets:read"])
    assert issuer.hits[f"{iss_name}/jwks"] == 1  # the create's check: its keys are the first login's
    status, _, _ = await login(api, method, "r", issuer.mint(iss_name))
    assert status == 200 and issuer.hits[f"{iss_name}/jwks"] == 1
    await asyncio.sleep(REFETCH)
    started = time.monotonic()
    answers = await asyncio.gather(*(login(api, method, "r", issuer.mint(iss_name, kid=f"made-up-{i}"))
                                     for i in range(150)))
    assert time.monotonic() - started < REFETCH
    assert {a[0] for a in answers} == {401}
    assert {a[1]["error"]["details"]["reason"] for a in answers} == {"signature"}
    assert issuer.hits[f"{iss_name}/jwks"] == 2  # one refetch for the whole flood

    issuer.keys[iss_name] = {"rsa-2": (RSA_NEXT, "RS256")}  # the issuer rotates its key
    rotated = issuer.mint(iss_name, kid="rsa-2")
    status, body, _ = await login(api, method, "r", rotated)
    assert status == 401 and body["error"]["details"]["reason"] == "signature"  # within the interval: no fetch
    assert issuer.hits[f"{iss_name}/jwks"] == 2
    await asyncio.sleep(REFETCH)
    status, body, _ = await login(api, method, "r", rotated)
    assert status == 200, body
    assert issuer.hits[f"{iss_name}/jwks"] == 3
    status, body, _ = await login(api, method, "r", issuer.mint(iss_name, kid="rsa-1"))  # the retired key
    assert status == 401 and body["error"]["details"]["reason"] == "signature"


async def test_the_external_identity_is_listed_and_deleting_it_voids_its_token(
        api: Api, issuer: Issuer, setup: dict[str, Any]) -> None:
    subject = f"pod-{secrets.token_hex(4)}"
    status, body, _ = await login(api, setup["method"], "deploy",
                                  issuer.mint(setup["issuer"], {"team": "payments", "sub": subject}))
    assert status == 200, body
    coffer = body["access_token"]
    status, page, _ = await api.request("GET", "/v1/identities?limit=1000")
    assert status == 200
    mine = [i for i in page["items"] if i.get("external") == {"method": setup["method"], "subject": subject}]
    assert len(mine) == 1 and mine[0]["kind"] == "external" and mine[0]["client_id"] is None
    assert mine[0]["allowed_scopes"] == ["secrets:read"]
    status, _, _ = await api.request("DELETE", f"/v1/identities/{mine[0]['id']}")
    assert status == 204
    status, err, headers = await read(api, coffer, f"{setup['base']}/allowed/db")
    assert_envelope(status, err, headers, "token_revoked")
    status, body, _ = await login(api, setup["method"], "deploy",
                                  issuer.mint(setup["issuer"], {"team": "payments", "sub": subject}))
    assert status == 200  # a later login makes it anew
    status, me, _ = await api.request("GET", "/v1/auth/whoami", token=body["access_token"])
    assert me["identity"]["id"] != mine[0]["id"]


async def test_changing_the_roles_policies_changes_what_the_next_token_may_do(
        api: Api, issuer: Issuer, setup: dict[str, Any]) -> None:
    method, base = setup["method"], setup["base"]
    await put_role(api, method, "shifting", scopes=["secrets:read"], policies=[setup["allowed"]])
    token = issuer.mint(setup["issuer"], {"sub": f"job-{secrets.token_hex(4)}"})
    first = (await login(api, method, "shifting", token))[1]["access_token"]
    assert (await read(api, first, f"{base}/allowed/db"))[0] == 200
    assert (await read(api, first, f"{base}/denied/db"))[0] == 403
    await put_role(api, method, "shifting", scopes=["secrets:read"], policies=[setup["denied"]])
    second = (await login(api, method, "shifting", token))[1]["access_token"]
    assert (await read(api, second, f"{base}/denied/db"))[0] == 200
    assert (await read(api, second, f"{base}/allowed/db"))[0] == 403
    status, err, headers = await api.request("PUT", f"/v1/auth/methods/{method}/roles/shifting",
                                             json={"scopes": [], "policies": ["no-such-policy"]})
    assert_envelope(status, err, headers, "policy_not_found")


async def test_issuers_that_cant_be_reached_or_point_at_refused_addresses_are_invalid_config(
        api: Api, issuer: Issuer) -> None:
    iss_name, iss_url = issuer.add()
    issuer.jwks_uri[iss_name] = "http://10.0.0.1/jwks"
    methods = []
    for config in ({"issuer": f"http://127.0.0.1:{free_port()}/gone"}, {"issuer": iss_url},
                   {"issuer": "https://example.test", "jwks_url": "http://10.0.0.1/jwks"},
                   {"issuer": "http://169.254.169.254/latest"}):
        method = name("bad")
        methods.append(method)
        status, body, headers = await api.request("POST", "/v1/auth/methods",
                                                  json={"name": method, "type": "jwt", "config": config})
        err = assert_envelope(status, body, headers, "invalid_config")
        assert err["details"]["field"] in ("config.issuer", "config.jwks_url"), err
    assert issuer.hits[f"{iss_name}/jwks"] == 0
    status, page, _ = await api.request("GET", "/v1/auth/methods?limit=1000")
    assert status == 200 and not {m["name"] for m in page["items"]} & set(methods)
    for method in methods:
        assert (await api.request("GET", f"/v1/auth/methods/{method}"))[0] == 404


async def test_a_narrow_identity_cant_manage_methods(api: Api, setup: dict[str, Any]) -> None:
    narrow = await identity(api, ["secrets:read"], EVERYTHING)
    method = setup["method"]
    for verb, path, body in (("POST", "/v1/auth/methods", {"name": "x", "type": "jwt", "config": {"issuer": "x"}}),
                             ("GET", "/v1/auth/methods", None), ("GET", f"/v1/auth/methods/{method}", None),
                             ("PATCH", f"/v1/auth/methods/{method}", {"config": {}}),
                             ("DELETE", f"/v1/auth/methods/{method}", None),
                             ("PUT", f"/v1/auth/methods/{method}/roles/deploy", {"scopes": ["admin"]}),
                             ("GET", f"/v1/auth/methods/{method}/roles", None),
                             ("DELETE", f"/v1/auth/methods/{method}/roles/deploy", None)):
        status, err, headers = await api.request(verb, path, token=narrow["token"], json=body)
        assert_envelope(status, err, headers, "insufficient_scope")
    assert (await api.request("GET", f"/v1/auth/methods/{method}/roles/deploy"))[0] == 200


async def test_another_tenants_admin_neither_sees_nor_uses_this_tenants_methods(
        api: Api, issuer: Issuer, setup: dict[str, Any]) -> None:
    other = await tenant(api)
    admin = await identity(api, SECRETS, EVERYTHING, tenant=other["id"])
    method = setup["method"]
    status, page, _ = await api.request("GET", "/v1/auth/methods", token=admin["token"])
    assert status == 200 and page["items"] == []
    for verb, path, body in (("GET", f"/v1/auth/methods/{method}", None),
                             ("GET", f"/v1/auth/methods/{method}/roles", None),
                             ("GET", f"/v1/auth/methods/{method}/roles/deploy", None),
                             ("PUT", f"/v1/auth/methods/{method}/roles/deploy", {"scopes": ["admin"]}),
                             ("DELETE", f"/v1/auth/methods/{method}", None)):
        status, err, headers = await api.request(verb, path, token=admin["token"], json=body)
        assert_envelope(status, err, headers, "role_not_found")
    token = issuer.mint(setup["issuer"], {"team": "payments"})
    status, err, headers = await login(api, method, "deploy", token, tenant=other["id"])
    assert_envelope(status, err, headers, "role_not_found")
    status, err, headers = await api.request("GET", f"/v1/auth/methods/{method}", token=admin["token"],
                                             headers={"X-Tenant-ID": (await api.request(
                                                 "GET", "/v1/auth/whoami"))[1]["tenant"]["id"]})
    assert_envelope(status, err, headers, "tenant_access_denied")
    assert (await login(api, method, "deploy", token))[0] == 200  # still there, for its own tenant


async def test_logins_are_audited_with_the_method_and_never_the_jwt(
        api: Api, issuer: Issuer, setup: dict[str, Any]) -> None:
    method = setup["method"]
    good = issuer.mint(setup["issuer"], {"team": "payments"})
    bad = issuer.mint(setup["issuer"], {"team": "payments"}, aud="another-service")
    assert (await login(api, method, "deploy", good))[0] == 200
    assert (await login(api, method, "deploy", bad))[0] == 401
    status, page, _ = await api.request("GET", f"/v1/audit/events?path_prefix=auth-methods/{method}&limit=1000")
    assert status == 200, page
    logins = [e for e in page["items"] if e["action"].startswith(f"POST /v1/auth/methods/{method}/login")]
    assert {e["outcome"] for e in logins} >= {"ok", "authentication_required"}
    assert any(e["action"].endswith("(audience)") and e["status"] == 401 for e in logins)
    assert all(e["resource"].startswith(f"auth-methods/{method}/roles/") for e in logins), logins
    text = str(page)
    for token in (good, bad):
        assert token not in text and token.split(".")[1] not in text and token.split(".")[2] not in text
