"""Identities, tokens, MFA, policies and bindings through the gateway (api.md §3–4)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from services.platform import Platform
from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import allow, identity, name, token, totp_code
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_secrets import put, unique

ALL_CAPS = ["read", "list", "write", "delete", "restore", "purge"]


# -- identities -------------------------------------------------------------------

async def test_identity_lifecycle(api: Api) -> None:
    svc = await identity(api, ["secrets:read"])
    assert svc["id"].startswith("idn_") and svc["client_id"].startswith("cli_")
    assert svc["client_secret"].startswith("cs_") and svc["allowed_scopes"] == ["secrets:read"]
    status, got, _ = await api.request("GET", f"/v1/identities/{svc['id']}")
    assert status == 200 and "client_secret" not in got and got["name"] == svc["name"]
    assert not any("hash" in k for k in got)

    status, body, headers = await api.request("POST", "/v1/identities", json={
        "name": svc["name"], "kind": "service", "allowed_scopes": []})
    assert_envelope(status, body, headers, "name_conflict")

    status, patched, _ = await api.request("PATCH", f"/v1/identities/{svc['id']}",
                                           json={"allowed_scopes": ["secrets:read", "secrets:write"],
                                                 "rotate_client_secret": True})
    assert status == 200 and patched["allowed_scopes"] == ["secrets:read", "secrets:write"]
    new_secret = remember_secret(patched["client_secret"])
    status, body, headers = await api.request("POST", "/v1/auth/token", token=None, json={
        "client_id": svc["client_id"], "client_secret": svc["client_secret"]})
    assert_envelope(status, body, headers, "authentication_required")
    fresh = await token(api, svc["client_id"], new_secret)

    status, _, _ = await api.request("DELETE", f"/v1/identities/{svc['id']}")
    assert status == 204
    for path in (f"/v1/identities/{svc['id']}",):
        for method in ("GET", "PATCH", "DELETE"):
            status, body, headers = await api.request(method, path, json={})
            assert_envelope(status, body, headers, "identity_not_found")
    status, body, headers = await api.request("GET", "/v1/auth/whoami", token=fresh)
    assert_envelope(status, body, headers, "token_revoked")  # a deleted identity's tokens are void


@pytest.mark.parametrize(("payload", "code"), [
    ({"name": "x", "kind": "robot", "allowed_scopes": []}, "validation_error"),
    ({"name": "x", "kind": "user", "allowed_scopes": []}, "validation_error"),  # no password
    ({"name": "x", "kind": "user", "allowed_scopes": [], "password": "short"}, "validation_error"),
    ({"name": "x", "kind": "service", "allowed_scopes": [], "password": "long-enough-pass"}, "validation_error"),
    ({"name": "x", "kind": "service", "allowed_scopes": ["root"]}, "validation_error"),
    ({"name": "../x", "kind": "service", "allowed_scopes": []}, "validation_error"),
    ({"name": "ключ", "kind": "service", "allowed_scopes": []}, "validation_error"),
    ({"kind": "service", "allowed_scopes": []}, "validation_error"),
    ({"name": "x", "kind": "service", "allowed_scopes": "admin"}, "validation_error"),
])
async def test_bad_identity_bodies(api: Api, payload: dict[str, Any], code: str) -> None:
    status, body, headers = await api.request("POST", "/v1/identities", json=payload)
    assert_envelope(status, body, headers, code)


async def test_no_scope_escalation_through_identities(api: Api) -> None:
    limited = await identity(api, ["admin"], [allow(["**"], ["read", "list", "write", "manage"])])
    status, body, headers = await api.request("POST", "/v1/identities", token=limited["token"], json={
        "name": name(), "kind": "service", "allowed_scopes": ["admin", "secrets:write"]})
    err = assert_envelope(status, body, headers, "insufficient_scope")
    assert err["details"]["scopes"] == ["secrets:write"]


async def test_identities_list_is_paginated_and_filtered_by_policy(api: Api) -> None:
    ids = [(await identity(api, []))["id"] for _ in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        status, page, _ = await api.request("GET", "/v1/identities?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200
        seen += [i["id"] for i in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert set(ids) <= set(seen) and seen == sorted(seen)
    only_one = await identity(api, ["admin"], [allow([f"identities/{ids[0]}"], ["list"])])
    status, page, _ = await api.request("GET", "/v1/identities?limit=1000", token=only_one["token"])
    assert [i["id"] for i in page["items"]] == [ids[0]]


# -- users, MFA --------------------------------------------------------------------

async def test_user_login_totp_step_up_and_replay(api: Api) -> None:
    username, password = name("user"), remember_secret("correct horse battery staple")
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": username, "kind": "user", "allowed_scopes": ["secrets:read"], "password": password})
    assert status == 201 and "client_secret" not in user
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"username": username, "password": password})
    assert status == 200
    user_token = remember_secret(tok["access_token"])
    assert "mfa_at" not in jwt.decode(user_token, options={"verify_signature": False})

    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp", token=user_token)
    assert status == 201 and enrol["otpauth_uri"].startswith("otpauth://totp/")
    remember_secret(enrol["otpauth_uri"])
    code = totp_code(enrol["otpauth_uri"])
    status, stepped, _ = await api.request("POST", "/v1/auth/mfa", token=user_token, json={"totp_code": code})
    assert status == 200
    claims = jwt.decode(stepped["access_token"], options={"verify_signature": False})
    assert abs(claims["mfa_at"] - time.time()) < 5 and claims["scope"] == "secrets:read"

    status, body, headers = await api.request("POST", "/v1/auth/mfa", token=user_token, json={"totp_code": code})
    assert_envelope(status, body, headers, "mfa_required")  # the same code, replayed
    status, body, headers = await api.request("POST", "/v1/auth/mfa", token=user_token,
                                              json={"totp_code": "000000" if code != "000000" else "111111"})
    assert_envelope(status, body, headers, "mfa_required")
    status, body, headers = await api.request("POST", "/v1/auth/mfa", token=user_token, json={"totp_code": "12ab"})
    assert_envelope(status, body, headers, "validation_error")

    status, body, headers = await api.request("POST", "/v1/auth/token", token=None,
                                              json={"username": username, "password": password + "x"})
    assert_envelope(status, body, headers, "authentication_required")
    next_code = totp_code(enrol["otpauth_uri"], time.time() + 30)  # the next step: not used yet
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"username": username, "password": password, "totp_code": next_code})
    assert status == 200 and "mfa_at" in jwt.decode(tok["access_token"], options={"verify_signature": False})
    remember_secret(tok["access_token"])


async def test_a_step_up_without_an_enrolment_says_that_no_totp_is_enrolled(api: Api) -> None:
    """Not "the code is not valid": the caller's own identity has no factor, and the answer says so and how
    to enrol one (its own state only: a login answers alike for both failures)."""
    svc = await identity(api, ["secrets:read"])
    status, body, headers = await api.request("POST", "/v1/auth/mfa", token=svc["token"],
                                              json={"totp_code": "123456"})
    err = assert_envelope(status, body, headers, "mfa_required")
    assert err["details"]["reason"] == "not_enrolled" and err["details"]["identity_id"] == svc["id"], err
    assert "no TOTP factor is enrolled" in err["message"] and "/mfa/totp" in err["message"], err

    status, enrol, _ = await api.request("POST", f"/v1/identities/{svc['id']}/mfa/totp", token=svc["token"])
    assert status == 201, enrol
    code = totp_code(remember_secret(enrol["otpauth_uri"]))
    status, body, headers = await api.request("POST", "/v1/auth/mfa", token=svc["token"],
                                              json={"totp_code": "000000" if code != "000000" else "111111"})
    err = assert_envelope(status, body, headers, "mfa_required")  # enrolled now: a wrong code is told apart
    assert err["details"] == {"reason": "invalid_code"}, err


async def test_an_admin_may_reset_but_not_enrol_another_identitys_totp(api: Api) -> None:
    """The otpauth:// URI is the factor: only its owner sees it (api.md §3, no takeover). The root admin, who
    holds everything, is refused like anyone else, whether the identity exists or not."""
    username, password = name("user"), remember_secret("correct horse battery staple 7")
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": username, "kind": "user", "allowed_scopes": ["secrets:read"], "password": password})
    assert status == 201, user
    for target in (user["id"], "idn_doesnotexist"):
        status, body, headers = await api.request("POST", f"/v1/identities/{target}/mfa/totp")  # the root admin
        err = assert_envelope(status, body, headers, "forbidden")
        assert err["details"] == {"rule": "own_enrolment_only"} and "reset" in err["message"], err  # no URI
    status, got, _ = await api.request("GET", f"/v1/identities/{user['id']}")
    assert status == 200 and got["mfa_enrolled"] is False  # nothing was enrolled

    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"username": username, "password": password})
    assert status == 200, tok
    own = remember_secret(tok["access_token"])
    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp", token=own)
    assert status == 201 and enrol["otpauth_uri"].startswith("otpauth://totp/"), enrol  # the user itself
    remember_secret(enrol["otpauth_uri"])
    status, _, _ = await api.request("DELETE", f"/v1/identities/{user['id']}/mfa/totp")  # the admin's reset
    assert status == 204
    status, got, _ = await api.request("GET", f"/v1/identities/{user['id']}")
    assert got["mfa_enrolled"] is False


async def test_mfa_condition_needs_a_fresh_step_up(api: Api) -> None:
    base = unique()
    await put(api, f"{base}/guarded")
    svc = await identity(api, ["secrets:read"], [allow([f"secrets/{base}/**"], ["read"], mfa={"max_age": "15m"})])
    status, body, headers = await api.request("GET", f"/v1/secrets/{base}/guarded", token=svc["token"])
    assert_envelope(status, body, headers, "mfa_required")
    status, enrol, _ = await api.request("POST", f"/v1/identities/{svc['id']}/mfa/totp", token=svc["token"])
    remember_secret(enrol["otpauth_uri"])
    status, stepped, _ = await api.request("POST", "/v1/auth/mfa", token=svc["token"],
                                           json={"totp_code": totp_code(enrol["otpauth_uri"])})
    remember_secret(stepped["access_token"])
    status, _, _ = await api.request("GET", f"/v1/secrets/{base}/guarded", token=stepped["access_token"])
    assert status == 200


# -- revocation and signing keys ------------------------------------------------------

async def test_revoke_own_token_and_by_jti_as_admin(api: Api) -> None:
    svc = await identity(api, ["secrets:read"])
    second = await token(api, svc["client_id"], svc["client_secret"])
    status, _, _ = await api.request("POST", "/v1/auth/revoke", token=svc["token"], json={"token": svc["token"]})
    assert status == 204
    status, body, headers = await api.request("GET", "/v1/auth/whoami", token=svc["token"])
    assert_envelope(status, body, headers, "token_revoked")
    assert (await api.request("GET", "/v1/auth/whoami", token=second))[0] == 200

    other = await identity(api, ["secrets:read"])
    jti = jwt.decode(second, options={"verify_signature": False})["jti"]
    status, body, headers = await api.request("POST", "/v1/auth/revoke", token=other["token"], json={"jti": jti})
    assert_envelope(status, body, headers, "insufficient_scope")
    status, _, _ = await api.request("POST", "/v1/auth/revoke", json={"jti": jti})
    assert status == 204
    status, body, headers = await api.request("GET", "/v1/auth/whoami", token=second)
    assert_envelope(status, body, headers, "token_revoked")
    for bad in ({}, {"token": "x", "jti": "y"}, {"jti": 5}):
        status, body, headers = await api.request("POST", "/v1/auth/revoke", json=bad)
        assert_envelope(status, body, headers, "validation_error")
    status, body, headers = await api.request("POST", "/v1/auth/revoke", json={"token": "forged.token.x"})
    assert_envelope(status, body, headers, "token_invalid")


async def test_signing_key_rotation_keeps_old_tokens_valid(api: Api, admin: dict[str, Any]) -> None:
    old = await token(api, admin["client_id"], admin["client_secret"])
    old_kid = jwt.get_unverified_header(old)["kid"]
    status, body, _ = await api.request("POST", "/v1/auth/keys:rotate")
    assert status == 200 and body["kid"] != old_kid
    new = await token(api, admin["client_id"], admin["client_secret"])
    assert jwt.get_unverified_header(new)["kid"] == body["kid"]
    assert (await api.request("GET", "/v1/auth/whoami", token=old))[0] == 200
    assert (await api.request("GET", "/v1/auth/whoami", token=new))[0] == 200
    _, jwks, _ = await api.request("GET", "/v1/auth/jwks", token=None)
    assert {old_kid, body["kid"]} <= {k["kid"] for k in jwks["keys"]}


# -- policies and bindings -------------------------------------------------------------

async def test_policy_and_binding_codes(api: Api) -> None:
    pol = name("pol")
    status, created, _ = await api.request("POST", "/v1/policies", json={
        "name": pol, "description": "d", "rules": [allow(["secrets/x/**"], ["read"])]})
    assert status == 201 and created["id"].startswith("pol_")
    cases = [
        ("POST", "/v1/policies", {"name": pol, "rules": [allow(["a"], ["read"])]}, "name_conflict"),
        ("POST", "/v1/policies", {"name": name("pol"), "rules": []}, "invalid_policy"),
        ("POST", "/v1/policies", {"name": name("pol"), "rules": [allow(["a"], ["fly"])]}, "invalid_policy"),
        ("POST", "/v1/policies", {"name": name("pol"), "rules": [allow(["a[b"], ["read"])]}, "invalid_glob"),
        ("POST", "/v1/policies", {"name": name("pol"), "rules": [allow(["a"], ["read"],
                                                                       ip_ranges=["999.0.0.0/8"])]},
         "invalid_policy"),
        ("POST", "/v1/policies", {"name": "Bad Name", "rules": [allow(["a"], ["read"])]}, "validation_error"),
        ("POST", "/v1/policies", {"rules": [allow(["a"], ["read"])]}, "validation_error"),
        ("GET", "/v1/policies/nope-nope", None, "policy_not_found"),
        ("PUT", "/v1/policies/nope-nope", {"rules": [allow(["a"], ["read"])]}, "policy_not_found"),
        ("DELETE", "/v1/policies/nope-nope", None, "policy_not_found"),
        ("POST", "/v1/bindings", {"policy": "nope-nope", "identity_id": "idn_x"}, "policy_not_found"),
        ("POST", "/v1/bindings", {"policy": pol, "identity_id": "idn_nobody"}, "identity_not_found"),
        ("GET", "/v1/bindings/bnd_nope", None, "binding_not_found"),
        ("DELETE", "/v1/bindings/bnd_nope", None, "binding_not_found"),
    ]
    for method, path, payload, code in cases:
        status, body, headers = await api.request(method, path, json=payload)
        assert_envelope(status, body, headers, code)
    svc = await identity(api, ["secrets:read"])
    status, binding, _ = await api.request("POST", "/v1/bindings", json={"policy": pol, "identity_id": svc["id"]})
    assert status == 201
    status, body, headers = await api.request("POST", "/v1/bindings", json={"policy": pol, "identity_id": svc["id"]})
    assert_envelope(status, body, headers, "binding_conflict")
    status, body, headers = await api.request("DELETE", f"/v1/policies/{pol}")
    assert_envelope(status, body, headers, "policy_in_use")
    assert (await api.request("GET", f"/v1/bindings/{binding['id']}"))[0] == 200
    assert (await api.request("DELETE", f"/v1/bindings/{binding['id']}"))[0] == 204
    assert (await api.request("DELETE", f"/v1/policies/{pol}"))[0] == 204


async def test_policy_decisions_through_the_gateway(api: Api) -> None:
    base = unique()
    for p in ("team-a/k", "team-b/k", "team-a/deny/k"):
        await put(api, f"{base}/{p}")
    svc = await identity(api, ["secrets:read", "secrets:write"], [
        allow([f"secrets/{base}/team-a/**"], ["read", "list", "write"]),
        {"effect": "deny", "paths": [f"secrets/{base}/team-a/deny/**"], "capabilities": ["read", "list"]},
    ])
    t = svc["token"]
    assert (await api.request("GET", f"/v1/secrets/{base}/team-a/k", token=t))[0] == 200
    for path in ("team-b/k", "team-a/deny/k"):
        status, body, headers = await api.request("GET", f"/v1/secrets/{base}/{path}", token=t)
        err = assert_envelope(status, body, headers, "access_denied")
        assert err["details"]["capability"] == "read"
    status, body, headers = await api.request("DELETE", f"/v1/secrets/{base}/team-a/k", token=t)
    assert_envelope(status, body, headers, "access_denied")  # write ≠ delete
    status, page, _ = await api.request("GET", f"/v1/secrets?prefix={base}/", token=t)
    assert [i["path"] for i in page["items"]] == [f"{base}/team-a/k"]  # only what it may list

    # a policy change takes effect at once (the event reaches this replica)
    status, _, _ = await api.request("PUT", f"/v1/policies/{svc['policy']}",
                                     json={"rules": [allow([f"secrets/{base}/team-b/**"], ["read"])]})
    assert status == 200
    deadline = time.monotonic() + 1.0
    while (await api.request("GET", f"/v1/secrets/{base}/team-b/k", token=t))[0] != 200:
        assert time.monotonic() < deadline, "policy change not applied within 1 s"
        await asyncio.sleep(0.05)
    assert (await api.request("GET", f"/v1/secrets/{base}/team-a/k", token=t))[0] == 403


async def test_ip_and_time_window_conditions(api: Api) -> None:
    base = unique()
    await put(api, f"{base}/k")
    office = await identity(api, ["secrets:read"], [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"])])
    status, body, headers = await api.request("GET", f"/v1/secrets/{base}/k", token=office["token"],
                                              headers={"X-Forwarded-For": "10.1.2.3"})
    assert_envelope(status, body, headers, "ip_not_allowed")  # spoofed XFF from an untrusted peer is ignored
    never = (datetime.now(UTC).weekday() + 3) % 7
    days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    closed = await identity(api, ["secrets:read"], [allow(["**"], ["read"], time_windows=[
        {"days": [days[never]], "start": "00:00", "end": "00:01", "timezone": "UTC"}])])
    status, body, headers = await api.request("GET", f"/v1/secrets/{base}/k", token=closed["token"])
    assert_envelope(status, body, headers, "time_window_violation")
    local = await identity(api, ["secrets:read"], [allow(["**"], ["read"], ip_ranges=["127.0.0.0/8", "::1/128"])])
    assert (await api.request("GET", f"/v1/secrets/{base}/k", token=local["token"]))[0] == 200


async def test_no_policy_means_no_access(api: Api) -> None:
    base = unique()
    await put(api, f"{base}/k")
    bare = await identity(api, ["secrets:read", "secrets:write", "admin"])
    for method, path in (("GET", f"/v1/secrets/{base}/k"), ("PUT", f"/v1/secrets/{base}/n"),
                         ("POST", "/v1/sys/kms:rotate"), ("GET", f"/v1/identities/{bare['id']}")):
        status, body, headers = await api.request(method, path, token=bare["token"], json={"value": "v"})
        assert_envelope(status, body, headers, "access_denied")
    status, page, _ = await api.request("GET", "/v1/secrets", token=bare["token"])
    assert status == 200 and page["items"] == []


async def test_policy_events_are_published(api: Api, platform: Platform) -> None:
    from shared.context import RequestContext
    from shared.contracts.events import Event
    from tests.integration.test_bus_contract import wait_until

    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await platform.bus.subscribe("test-policy-events-" + unique(), ["policy.*"], on)
    pol = name("ev")
    await api.request("POST", "/v1/policies", json={"name": pol, "rules": [allow(["a"], ["read"])]})
    await api.request("PUT", f"/v1/policies/{pol}", json={"rules": [allow(["b"], ["read"])]})
    await api.request("DELETE", f"/v1/policies/{pol}")
    await wait_until(lambda: len([e for e in got if e.data.get("name") == pol]) >= 3)
    assert [e.type for e in got if e.data.get("name") == pol] == ["policy.created", "policy.updated",
                                                                   "policy.deleted"]


async def test_a_list_page_says_nothing_of_what_the_caller_cant_list(api: Api) -> None:
    """A narrow identity lists policies with ``limit=1``: the one it may list, and no cursor, although the
    tenant has many more (the cursor is cut after the rows are judged, not before)."""
    mine = name("mine")
    status, _, _ = await api.request("POST", "/v1/policies", json={"name": mine, "rules": [allow(["x/**"], ["read"])]})
    assert status == 201
    narrow = await identity(api, ["admin"], [allow([f"policies/{mine}"], ["list", "read"])])
    status, page, _ = await api.request("GET", "/v1/policies?limit=1", token=narrow["token"])
    assert status == 200 and [p["name"] for p in page["items"]] == [mine] and page["next_cursor"] is None, page
    status, page, _ = await api.request("GET", "/v1/policies?limit=1")  # the admin sees them all, a page at a time
    assert status == 200 and len(page["items"]) == 1 and page["next_cursor"] is not None
