"""``require_mfa`` on a tenant and on a user (issue #27, info; api.md §3): a user with a TOTP enrolment must
give a code at login; a password alone answers 403 ``mfa_required``. Before, MFA was enforced only by
policy conditions and a password alone always got a token.

Every test makes tenants of its own, so one test's switch does not reach another's users.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import allow, identity, name, totp_code
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_tenants import tenant

EVERYTHING = ["read", "list", "write", "delete"]


async def _user(api: Api, ten: str, scopes: list[str] | None = None, rules: list[dict[str, Any]] | None = None,
                **extra: Any) -> dict[str, Any]:
    """A user of tenant ``ten`` (its password under ``password``), bound to ``rules`` when given."""
    at = {"X-Tenant-ID": ten}
    password = remember_secret(f"pw-{name()}-long-enough")
    status, user, _ = await api.request("POST", "/v1/identities", headers=at, json={
        "name": name("user"), "kind": "user", "allowed_scopes": scopes or ["secrets:read"], "password": password,
        **extra})
    assert status == 201, user
    if rules:
        policy = name("p")
        assert (await api.request("POST", "/v1/policies", headers=at, json={"name": policy, "rules": rules}))[0] == 201
        status, bound, _ = await api.request("POST", "/v1/bindings", headers=at,
                                             json={"policy": policy, "identity_id": user["id"]})
        assert status == 201, bound
    return {**user, "password": password}


async def _login(api: Api, user: dict[str, Any], **extra: Any) -> tuple[int, Any, Any]:
    status, body, headers = await api.request("POST", "/v1/auth/token", token=None, json={
        "tenant_id": user["tenant_id"], "username": user["name"], "password": user["password"], **extra})
    if status == 200:
        remember_secret(body["access_token"])
    return status, body, headers


async def _enrol(api: Api, user: dict[str, Any]) -> str:
    """Enrol TOTP with the user's own (password-only) token; the ``otpauth://`` URI."""
    status, tok, _ = await _login(api, user)
    assert status == 200, tok
    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp",
                                         token=tok["access_token"])
    assert status == 201, enrol
    return str(remember_secret(enrol["otpauth_uri"]))


def _other(code: str) -> str:
    return "000000" if code != "000000" else "111111"


async def test_a_tenant_that_requires_mfa_gives_no_token_for_a_password_alone(api: Api) -> None:
    ten = (await tenant(api))["id"]
    enrolled, bare = await _user(api, ten), await _user(api, ten)
    uri = await _enrol(api, enrolled)
    assert (await _login(api, enrolled))[0] == 200  # not required yet: a password is enough

    status, got, _ = await api.request("PATCH", f"/v1/tenants/{ten}", json={"require_mfa": True})
    assert status == 200 and got["require_mfa"] is True, got
    status, body, headers = await _login(api, enrolled)
    err = assert_envelope(status, body, headers, "mfa_required")
    assert err["details"] == {"field": "totp_code"} and "access_token" not in str(body)
    status, body, headers = await _login(api, {**enrolled, "password": enrolled["password"] + "x"})
    assert_envelope(status, body, headers, "authentication_required")  # a wrong password still learns nothing
    status, body, headers = await _login(api, enrolled, totp_code=_other(totp_code(uri)))
    assert_envelope(status, body, headers, "authentication_required")
    status, tok, _ = await _login(api, enrolled, totp_code=totp_code(uri))
    assert status == 200, tok
    assert abs(jwt.decode(tok["access_token"], options={"verify_signature": False})["mfa_at"] - time.time()) < 5
    assert (await _login(api, bare))[0] == 200  # no enrolment yet: it can log in to enrol

    status, log, _ = await api.request("GET", f"/v1/audit/events?path_prefix=identities/{enrolled['id']}",
                                       headers={"X-Tenant-ID": ten})
    assert status == 200 and "mfa_required" in [e["outcome"] for e in log["items"]]
    status, got, _ = await api.request("PATCH", f"/v1/tenants/{ten}", json={"require_mfa": False})
    assert status == 200 and got["require_mfa"] is False
    assert (await _login(api, enrolled))[0] == 200


async def test_a_user_that_requires_mfa(api: Api) -> None:
    ten = (await tenant(api))["id"]
    strict, relaxed = await _user(api, ten, require_mfa=True), await _user(api, ten)
    assert strict["require_mfa"] is True and relaxed["require_mfa"] is False
    strict_uri = await _enrol(api, strict)  # enrolled after its password-only login: from now on a code
    await _enrol(api, relaxed)
    status, body, headers = await _login(api, strict)
    assert_envelope(status, body, headers, "mfa_required")
    assert (await _login(api, strict, totp_code=totp_code(strict_uri)))[0] == 200
    assert (await _login(api, relaxed))[0] == 200  # the tenant doesn't require it
    status, got, _ = await api.request("GET", "/v1/tenants/" + ten)
    assert status == 200 and got["require_mfa"] is False
    # only users log in with a code
    status, body, headers = await api.request("POST", "/v1/identities", headers={"X-Tenant-ID": ten}, json={
        "name": name("svc"), "kind": "service", "allowed_scopes": [], "require_mfa": True})
    assert_envelope(status, body, headers, "validation_error")
    svc = await identity(api, ["secrets:read"], tenant=ten)
    status, body, headers = await api.request("PATCH", f"/v1/identities/{svc['id']}", json={"require_mfa": True},
                                              headers={"X-Tenant-ID": ten})
    err = assert_envelope(status, body, headers, "validation_error")
    assert [f["field"] for f in err["details"]["fields"]] == ["require_mfa"]


async def test_a_tenant_admin_of_another_tenant_cant_flip_it(api: Api) -> None:
    ten, other = (await tenant(api))["id"], (await tenant(api))["id"]
    user = await _user(api, ten, require_mfa=True)
    assert (await api.request("PATCH", f"/v1/tenants/{ten}", json={"require_mfa": True}))[0] == 200
    uri = await _enrol(api, user)
    intruder = await identity(api, ["admin"], [allow(["**"], EVERYTHING)], tenant=other)
    status, body, headers = await api.request("PATCH", f"/v1/tenants/{ten}", json={"require_mfa": False},
                                              token=intruder["token"])
    assert_envelope(status, body, headers, "tenant_access_denied")
    status, body, headers = await api.request("PATCH", f"/v1/identities/{user['id']}", json={"require_mfa": False},
                                              token=intruder["token"], headers={"X-Tenant-ID": ten})
    assert_envelope(status, body, headers, "tenant_access_denied")
    status, body, headers = await api.request("PATCH", f"/v1/identities/{user['id']}", json={"require_mfa": False},
                                              token=intruder["token"])
    assert_envelope(status, body, headers, "identity_not_found")  # not in its tenant: no such identity there
    status, got, _ = await api.request("GET", f"/v1/tenants/{ten}")
    assert status == 200 and got["require_mfa"] is True
    status, got, _ = await api.request("GET", f"/v1/identities/{user['id']}", headers={"X-Tenant-ID": ten})
    assert status == 200 and got["require_mfa"] is True and got["mfa_enrolled"] is True
    status, body, headers = await _login(api, user)
    assert_envelope(status, body, headers, "mfa_required")
    assert (await _login(api, user, totp_code=totp_code(uri)))[0] == 200
    # the tenant's own admin may
    admin = await identity(api, ["admin"], [allow(["**"], EVERYTHING)], tenant=ten)
    status, got, _ = await api.request("PATCH", f"/v1/tenants/{ten}", json={"require_mfa": False},
                                       token=admin["token"])
    assert status == 200 and got["require_mfa"] is False


async def test_a_user_cant_turn_it_off_for_themselves(api: Api) -> None:
    ten = (await tenant(api))["id"]
    assert (await api.request("PATCH", f"/v1/tenants/{ten}", json={"require_mfa": True}))[0] == 200
    rules = [allow(["identities/*"], ["read", "write"])]
    # the tenant requires it: no identity of it can be set to false, its own least of all
    user = await _user(api, ten, ["admin", "secrets:read"], rules)
    status, tok, _ = await _login(api, user)  # not enrolled yet: a password is enough
    assert status == 200
    own = tok["access_token"]
    status, body, headers = await api.request("PATCH", f"/v1/identities/{user['id']}", json={"require_mfa": False},
                                              token=own)
    err = assert_envelope(status, body, headers, "forbidden")
    assert err["details"] == {"field": "require_mfa", "rule": "tenant_requires_mfa"}
    status, body, headers = await api.request("PATCH", f"/v1/tenants/{ten}", json={"require_mfa": False}, token=own)
    assert_envelope(status, body, headers, "access_denied")
    status, got, _ = await api.request("GET", f"/v1/tenants/{ten}")
    assert got["require_mfa"] is True
    uri = await _enrol(api, user)
    status, body, headers = await _login(api, user)
    assert_envelope(status, body, headers, "mfa_required")
    assert (await _login(api, user, totp_code=totp_code(uri)))[0] == 200

    # its own require_mfa (the tenant doesn't): lifting it needs a fresh step-up, as changing the enrolment does
    ten = (await tenant(api))["id"]
    user = await _user(api, ten, ["admin", "secrets:read"], rules)
    status, tok, _ = await _login(api, user)
    own = tok["access_token"]
    status, got, _ = await api.request("PATCH", f"/v1/identities/{user['id']}", json={"require_mfa": True},
                                       headers={"X-Tenant-ID": ten})
    assert status == 200 and got["require_mfa"] is True
    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp", token=own)
    assert status == 201
    uri = remember_secret(enrol["otpauth_uri"])
    status, body, headers = await api.request("PATCH", f"/v1/identities/{user['id']}", json={"require_mfa": False},
                                              token=own)
    assert_envelope(status, body, headers, "mfa_required")
    status, body, headers = await _login(api, user)
    assert_envelope(status, body, headers, "mfa_required")
    status, stepped, _ = await api.request("POST", "/v1/auth/mfa", token=own, json={"totp_code": totp_code(uri)})
    assert status == 200, stepped
    status, got, _ = await api.request("PATCH", f"/v1/identities/{user['id']}", json={"require_mfa": False},
                                       token=remember_secret(stepped["access_token"]))
    assert status == 200 and got["require_mfa"] is False
    assert (await _login(api, user))[0] == 200
