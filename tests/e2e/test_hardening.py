"""The security review's holes, each tried through the gateway as an attacker would (issue #11).

Every test here failed on the main of 2026-11-25 (before the fixes); each
names the rule of ../shared/docs/api.md it proves. The module runs twice, on a
platform of its own each time: embedded (the in-process bus) and on RabbitMQ
(where a second gateway process also checks that changes reach other replicas).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from services.gateway.state import STATE
from services.platform import Platform
from tests.conftest import Api, free_port, initialised, own_platform, remember_secret, start_platform
from tests.e2e.iam_helpers import allow, identity, name, token, totp_code
from tests.e2e.receiver import Receiver
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_run_modes import spawn, wait_healthy

# -- §4: globs run in linear time --------------------------------------------------------

NOWHERE = "http://127.0.0.1:9999/h"  # an allowed port where nothing listens
@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    """This module's own platform: the in-process bus, or RabbitMQ in a vhost of its own."""
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn) as p:
        yield p


@pytest.fixture(scope="module")
async def admin(platform: Platform, http: aiohttp.ClientSession) -> dict[str, Any]:
    """``sys/init`` on this module's platform: its answer, and an ``api`` client holding the admin token."""
    assert platform.url
    api = Api(platform.url, http)
    status, body, _ = await api.request("POST", "/v1/sys/init", token=None)
    assert status == 201, body
    api.token = remember_secret(body["token"])
    remember_secret(body["client_secret"])
    return {**body, "api": api}


EXPLOSIVE = "/".join(["**"] * 20 + ["nothing-matches-this"])  # hours for the old backtracking matcher


async def test_a_pathological_glob_does_not_stall_the_gateway(api: Api) -> None:
    """A tenant's policy and subscription with 20 '**' answer at once and don't hold up anyone else."""
    victim = await identity(api, ["secrets:read", "secrets:write", "webhooks"], [
        allow([EXPLOSIVE], ["read"]), allow(["secrets/hard/**", "webhooks", "webhooks/**"], ["read", "write"])])
    deep = "hard/" + "/".join(["s"] * 14)
    status, _, _ = await api.request("PUT", f"/v1/secrets/{deep}", json={"value": "v"}, token=victim["token"])
    assert status == 201

    started = time.monotonic()
    status, body, headers = await api.request("DELETE", f"/v1/secrets/{deep}", token=victim["token"])
    assert_envelope(status, body, headers, "access_denied")  # every rule was evaluated, none allowed it
    assert time.monotonic() - started < 2.0

    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": NOWHERE},
                                        token=victim["token"])
    assert status == 201
    status, sub, _ = await api.request("POST", "/v1/subscriptions", token=victim["token"], json={
        "webhook_id": hook["id"], "event_types": ["secret.*"], "path_pattern": "/".join(["**"] * 20 + ["x"])})
    assert status == 201, sub
    # events are matched against that pattern while everyone else keeps being answered
    writes = [api.request("PUT", f"/v1/secrets/{deep}-{i}", json={"value": "v"}, token=victim["token"])
              for i in range(5)]
    started = time.monotonic()
    results = await asyncio.gather(*writes, *(api.request("GET", "/v1/sys/health", token=None) for _ in range(5)))
    assert all(r[0] in (200, 201) for r in results)
    assert time.monotonic() - started < 3.0


async def test_a_glob_over_512_characters_is_refused(api: Api) -> None:
    status, body, headers = await api.request("POST", "/v1/policies", json={
        "name": name("p"), "rules": [allow(["a/" * 256 + "b"], ["read"])]})
    assert_envelope(status, body, headers, "invalid_glob")


# -- §1: no-store on every /v1 answer; Retry-After on every quota_exceeded -------------------

def _concrete(path: str) -> str:
    """A route template with its parameters filled in (``{tail:.+}`` included)."""
    return re.sub(r"\{[a-z_]+(?::[^}]*)?\}", "x", path).replace("(ping|rotate-secret)", "ping")


async def test_every_v1_route_answers_no_store(platform: Platform, api: Api) -> None:
    """Every route of the table, success or failure, with or without a token: ``Cache-Control: no-store``."""
    assert platform.app is not None
    routes = {(r.method, r.path) for r in platform.app[STATE].routes.values() if r.path.startswith("/v1/")}
    assert len(routes) > 40
    missing = []
    streamed = {(r.method, r.path) for r in platform.app[STATE].routes.values() if r.media == "text/event-stream"}
    for method, path in sorted(routes):
        for bearer in ("default", None):
            if (method, path) in streamed and bearer:  # a stream has no end: its headers are what counts
                async with api.session.request(method, api.url + path,
                                               headers={"Authorization": f"Bearer {api.token}"}) as resp:
                    status, headers = resp.status, resp.headers
            else:
                status, _, headers = await api.request(method, _concrete(path), token=bearer, json={})
            if headers.get("Cache-Control") != "no-store":
                missing.append((method, path, status))
    status, _, headers = await api.request("GET", "/v1/no-such-route")
    assert headers.get("Cache-Control") == "no-store"
    assert not missing, missing


async def test_secret_carrying_answers_are_not_stored(api: Api, admin: dict[str, Any]) -> None:
    """The answers that hold a secret value, a token, a client secret or a signing secret."""
    path = f"nostore/{name()}"
    value = remember_secret(f"v-{name()}")
    calls: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
        ("PUT", f"/v1/secrets/{path}", {"value": value}, "default"),
        ("GET", f"/v1/secrets/{path}", None, "default"),
        ("POST", "/v1/auth/token", {"client_id": admin["client_id"], "client_secret": admin["client_secret"]}, None),
        ("POST", "/v1/identities", {"name": name(), "kind": "service", "allowed_scopes": []}, "default"),
        ("POST", "/v1/webhooks", {"url": NOWHERE}, "default"),
    ]
    for method, url, body, bearer in calls:
        status, answer, headers = await api.request(method, url, json=body, token=bearer)
        assert status in (200, 201), (url, answer)
        assert headers["Cache-Control"] == "no-store", url
        for key in ("client_secret", "secret", "access_token"):
            if isinstance(answer, dict) and key in answer:
                remember_secret(answer[key])


async def test_quota_exceeded_raised_inside_a_service_carries_retry_after(api: Api) -> None:
    """max_secrets (checked by the secrets service) and max_webhooks (the webhooks service)."""
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    assert status == 201
    tenant = {"X-Tenant-ID": child["id"]}
    await api.request("PATCH", f"/v1/tenants/{child['id']}", json={"quotas": {"max_secrets": 1, "max_webhooks": 0}})
    status, _, _ = await api.request("PUT", "/v1/secrets/q/one", json={"value": "v"}, headers=tenant)
    assert status == 201
    for method, url, body in (("PUT", "/v1/secrets/q/two", {"value": "v"}),
                              ("POST", "/v1/webhooks", {"url": NOWHERE})):
        status, answer, headers = await api.request(method, url, json=body, headers=tenant)
        assert_envelope(status, answer, headers, "quota_exceeded")
        assert headers["Retry-After"].isdigit() and int(headers["Retry-After"]) > 0


# -- §5.5: one outbound guard -----------------------------------------------------------------

async def test_outbound_guard_refuses_privileged_ports_and_site_local_addresses(api: Api) -> None:
    """Allow-listing 127.0.0.0/8 (as the tests do) widens addresses, never ports; fec0::/10 is not public."""
    for url in ("http://127.0.0.1:22/h", "http://127.0.0.1:25/h", "http://127.0.0.1:1023/h", "https://[fec0::1]/h",
                "https://[fec0::1]:8443/h"):
        status, body, headers = await api.request("POST", "/v1/webhooks", json={"url": url})
        err = assert_envelope(status, body, headers, "webhook_url_invalid")
        assert err["details"]["reason"], url
    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:1024/h"})
    assert status == 201, hook
    remember_secret(hook["secret"])
    status, body, headers = await api.request("PATCH", f"/v1/webhooks/{hook['id']}", json={"url": "http://127.0.0.1:22/"})
    assert_envelope(status, body, headers, "webhook_url_invalid")


# -- §3: MFA can't be sidestepped --------------------------------------------------------------

async def _user(api: Api, scopes: list[str], **extra: Any) -> tuple[dict[str, Any], str, str]:
    """A user identity, its password and a password-only token."""
    username, password = name("user"), remember_secret(f"pw-{name()}-long-enough")
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": username, "kind": "user", "allowed_scopes": scopes, "password": password, **extra})
    assert status == 201, user
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"username": username, "password": password})
    assert status == 200, tok
    return user, password, remember_secret(tok["access_token"])


async def _step_up(api: Api, token: str, otpauth_uri: str, at: float | None = None) -> str:
    status, body, _ = await api.request("POST", "/v1/auth/mfa", token=token,
                                        json={"totp_code": totp_code(otpauth_uri, at)})
    assert status == 200, body
    return remember_secret(body["access_token"])


async def test_a_password_alone_cannot_replace_or_remove_mfa(api: Api, platform: Platform) -> None:
    user, _, password_only = await _user(api, ["secrets:read"])
    enrol = f"/v1/identities/{user['id']}/mfa/totp"
    status, first, _ = await api.request("POST", enrol, token=password_only)
    assert status == 201  # a first enrolment stays open
    remember_secret(first["otpauth_uri"])

    for method in ("POST", "DELETE"):  # an attacker holding only the password
        status, body, headers = await api.request(method, enrol, token=password_only)
        err = assert_envelope(status, body, headers, "mfa_required")
        assert err["details"]["max_age_seconds"] == 300

    assert platform.app is not None  # a step-up older than 5 minutes is not enough either
    stale, _ = platform.app[STATE].signer.issue(user["id"], user["tenant_id"], ("secrets:read",),
                                          mfa_at=int(time.time()) - 301)
    status, body, headers = await api.request("POST", enrol, token=remember_secret(stale))
    assert_envelope(status, body, headers, "mfa_required")

    fresh = await _step_up(api, password_only, first["otpauth_uri"])
    status, second, _ = await api.request("POST", enrol, token=fresh)
    assert status == 201 and second["otpauth_uri"] != first["otpauth_uri"]
    remember_secret(second["otpauth_uri"])
    status, body, headers = await api.request("POST", "/v1/auth/mfa", token=password_only,
                                              json={"totp_code": totp_code(first["otpauth_uri"], time.time() + 30)})
    assert_envelope(status, body, headers, "mfa_required")  # the replaced factor no longer steps up


async def test_an_admin_resets_mfa_and_that_voids_the_identitys_tokens(api: Api) -> None:
    user, password, token = await _user(api, ["secrets:read"])
    enrol = f"/v1/identities/{user['id']}/mfa/totp"
    status, body, _ = await api.request("POST", enrol, token=token)
    assert status == 201
    stepped = await _step_up(api, token, remember_secret(body["otpauth_uri"]))

    status, _, _ = await api.request("DELETE", enrol)  # the admin
    assert status == 204
    for old in (token, stepped):
        status, body, headers = await api.request("GET", "/v1/auth/whoami", token=old)
        assert_envelope(status, body, headers, "token_revoked")
    status, got, _ = await api.request("GET", f"/v1/identities/{user['id']}")
    assert got["mfa_enrolled"] is False
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"username": user["name"], "password": password})
    assert status == 200  # logging in again works, and enrolling is open again
    status, _, _ = await api.request("POST", enrol, token=remember_secret(tok["access_token"]))
    assert status == 201
    status, _, _ = await api.request("DELETE", f"/v1/identities/{user['id']}/mfa/totp")
    assert status == 204
    status, _, _ = await api.request("DELETE", f"/v1/identities/{user['id']}/mfa/totp")
    assert status == 204  # nothing enrolled: still 204


# -- §3: no identity takeover ---------------------------------------------------------------------

async def test_a_helpdesk_identity_cannot_take_over_a_stronger_one(api: Api, admin: dict[str, Any]) -> None:
    """write on identities/** is not enough to change an identity that holds more than the caller."""
    _, me, _ = await api.request("GET", "/v1/auth/whoami")
    root_admin = me["identity"]["id"]
    helpdesk = await identity(api, ["admin"], [allow(["identities", "identities/**"],
                                                     ["read", "list", "write", "delete", "manage"])])
    reader = await identity(api, ["secrets:read"])
    partner = await identity(api, ["admin"], partner_admin=True)
    weaker = await identity(api, ["admin"])
    tok = helpdesk["token"]
    for target in (root_admin, reader["id"], partner["id"]):
        attempts = [
            ("PATCH", f"/v1/identities/{target}", {"rotate_client_secret": True}),
            ("PATCH", f"/v1/identities/{target}", {"allowed_scopes": []}),
            ("POST", f"/v1/identities/{target}/mfa/totp", None),
            ("DELETE", f"/v1/identities/{target}/mfa/totp", None),
            ("DELETE", f"/v1/identities/{target}", None),
        ]
        for method, url, body in attempts:
            status, answer, headers = await api.request(method, url, json=body, token=tok)
            assert_envelope(status, answer, headers, "forbidden")
    status, _, _ = await api.request("GET", "/v1/auth/whoami")
    assert status == 200  # the root admin's token still works: nothing was changed
    status, answer, _ = await api.request("POST", "/v1/auth/token", token=None, json={
        "client_id": admin["client_id"], "client_secret": admin["client_secret"]})
    assert status == 200  # and its secret is the same
    remember_secret(answer["access_token"])
    status, rotated, _ = await api.request("PATCH", f"/v1/identities/{weaker['id']}",
                                           json={"rotate_client_secret": True}, token=tok)
    assert status == 200  # an identity that holds no more than the caller: allowed
    remember_secret(rotated["client_secret"])


# -- §3: changes take effect now, on every replica ---------------------------------------------------

@pytest.fixture(scope="module")
async def far(platform: Platform, pg_dsn: str, http: aiohttp.ClientSession) -> AsyncIterator[Api | None]:
    """A second gateway process on the same bus and database (on RabbitMQ; embedded mode has no replicas)."""
    settings = platform.settings
    if settings.amqp_url is None:
        yield None
        return
    port = free_port()
    other = await spawn("services.gateway", {
        "COFFER_AMQP_URL": settings.amqp_url.get_secret_value(), "COFFER_DATABASE_URL": pg_dsn,
        "COFFER_HTTP_PORT": str(port), "COFFER_SCHEMA_PREFIX": settings.schema_prefix,
        "COFFER_DATA_DIR": str(settings.data_dir)})
    api = Api(f"http://127.0.0.1:{port}", http)
    try:
        await wait_healthy(api, other)
        yield api
    finally:
        await other.stop()


async def _refused_within_a_second(far: Api | None, token: str) -> float:
    """The other gateway replica refuses ``token`` within a second (0 where there is no other replica)."""
    if far is None:
        return 0.0
    changed = time.monotonic()
    while True:
        status, body, headers = await far.request("GET", "/v1/auth/whoami", token=token)
        if status == 401:
            assert_envelope(status, body, headers, "token_revoked")
            return time.monotonic() - changed
        assert time.monotonic() - changed < 1.0, "the other replica still accepts the token after 1 s"
        await asyncio.sleep(0.02)


async def test_lowered_scopes_and_new_credentials_void_tokens_on_every_replica(api: Api, far: Api | None) -> None:
    svc = await identity(api, ["secrets:read", "secrets:write"])
    here = far or api  # the other replica, where there is one
    assert (await here.request("GET", "/v1/auth/whoami", token=svc["token"]))[0] == 200
    status, _, _ = await api.request("PATCH", f"/v1/identities/{svc['id']}",
                                     json={"allowed_scopes": ["secrets:read", "secrets:write", "webhooks"]})
    assert status == 200
    assert (await api.request("GET", "/v1/auth/whoami", token=svc["token"]))[0] == 200  # raising voids nothing

    status, _, _ = await api.request("PATCH", f"/v1/identities/{svc['id']}", json={"allowed_scopes": ["secrets:read"]})
    assert status == 200
    assert (await api.request("GET", "/v1/auth/whoami", token=svc["token"]))[0] == 401  # this replica: at once
    took = [await _refused_within_a_second(far, svc["token"])]

    fresh = await token(api, svc["client_id"], svc["client_secret"])
    assert (await here.request("GET", "/v1/auth/whoami", token=fresh))[0] == 200  # new tokens are fine
    status, rotated, _ = await api.request("PATCH", f"/v1/identities/{svc['id']}", json={"rotate_client_secret": True})
    assert status == 200
    remember_secret(rotated["client_secret"])
    assert (await api.request("GET", "/v1/auth/whoami", token=fresh))[0] == 401
    took.append(await _refused_within_a_second(far, fresh))

    user, _, user_token = await _user(api, ["secrets:read"])
    status, _, _ = await api.request("PATCH", f"/v1/identities/{user['id']}",
                                     json={"password": remember_secret(f"new-{name()}-password")})
    assert status == 200
    took.append(await _refused_within_a_second(far, user_token))
    assert (await api.request("GET", "/v1/auth/whoami", token=user_token))[0] == 401
    print("voided tokens refused by the other gateway after " + ", ".join(f"{t * 1000:.0f} ms" for t in took))


# -- §3: tenant boundaries ---------------------------------------------------------------------

async def _child(api: Api, **quotas: int) -> dict[str, Any]:
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": name("t"), "quotas": quotas})
    assert status == 201, child
    return child


async def test_a_tenant_cannot_set_its_own_quotas_or_kind_and_patch_merges(api: Api) -> None:
    child = await _child(api, max_secrets=5, max_webhooks=2)
    own = await identity(api, ["admin"], [allow(["tenants/**"], ["read", "write"])], tenant=child["id"])
    url = f"/v1/tenants/{child['id']}"
    for body in ({"quotas": {"max_secrets": 1_000_000}}, {"kind": "partner"}, {"quotas": None},
                 {"quotas": "not even an object"}, {"kind": 42, "name": name("t")}):
        status, answer, headers = await api.request("PATCH", url, json=body, token=own["token"])
        err = assert_envelope(status, answer, headers, "forbidden")  # before the fields are validated
        assert err["details"]["fields"] == sorted(set(body) & {"quotas", "kind"})
    renamed = name("t")
    status, got, _ = await api.request("PATCH", url, json={"name": renamed}, token=own["token"])
    assert status == 200 and got["name"] == renamed  # its own name is its own
    assert got["quotas"] == {"max_secrets": 5, "max_webhooks": 2}  # a merge: omitted fields stay

    status, got, _ = await api.request("PATCH", url, json={"quotas": {"max_leases": 3}})  # the partner above
    assert status == 200 and got["quotas"] == {"max_secrets": 5, "max_webhooks": 2, "max_leases": 3}
    status, got, _ = await api.request("PATCH", url, json={"quotas": {"max_secrets": None}})
    assert status == 200 and got["quotas"] == {"max_webhooks": 2, "max_leases": 3}  # null lifts one quota
    status, got, _ = await api.request("PATCH", url, json={"kind": "partner"})
    assert status == 200 and got["kind"] == "partner" and got["name"] == renamed
    status, answer, headers = await api.request("PATCH", url, json={"name": None})
    assert_envelope(status, answer, headers, "validation_error")
    _, me, _ = await api.request("GET", "/v1/auth/whoami")
    status, answer, headers = await api.request("PATCH", f"/v1/tenants/{me['tenant']['id']}",
                                                json={"quotas": {"max_secrets": 1}})
    assert_envelope(status, answer, headers, "forbidden")  # the root has no partner above it


async def test_a_jti_revocation_only_reaches_tokens_of_the_acting_tenant(api: Api) -> None:
    a, b = await _child(api), await _child(api)
    victim = await identity(api, ["secrets:read"], tenant=a["id"])
    other_admin = await identity(api, ["admin"], [allow(["sys/tokens"], ["revoke"])], tenant=b["id"])
    jti = jwt.decode(victim["token"], options={"verify_signature": False})["jti"]
    status, _, _ = await api.request("POST", "/v1/auth/revoke", json={"jti": jti}, token=other_admin["token"])
    assert status == 204  # accepted, and without effect on another tenant's token
    assert (await api.request("GET", "/v1/auth/whoami", token=victim["token"]))[0] == 200
    status, _, _ = await api.request("POST", "/v1/auth/revoke", json={"jti": jti}, headers={"X-Tenant-ID": a["id"]})
    assert status == 204  # the partner admin, acting in the victim's tenant
    status, body, headers = await api.request("GET", "/v1/auth/whoami", token=victim["token"])
    assert_envelope(status, body, headers, "token_revoked")


async def test_deleting_a_tenant_destroys_its_data_in_every_service(api: Api, platform: Platform) -> None:
    child = await _child(api)
    there = {"X-Tenant-ID": child["id"]}
    for i in range(3):
        status, _, _ = await api.request("PUT", f"/v1/secrets/gone/{i}", json={"value": remember_secret(name("v"))},
                                         headers=there)
        assert status == 201
    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": NOWHERE}, headers=there)
    assert status == 201
    remember_secret(hook["secret"])
    status, _, _ = await api.request("POST", "/v1/subscriptions", headers=there,
                                     json={"webhook_id": hook["id"], "event_types": ["#"]})
    assert status == 201
    status, _, _ = await api.request("DELETE", f"/v1/tenants/{child['id']}")
    assert status == 204

    tables = {"secrets": ("secrets", "secret_versions"), "webhooks": ("webhooks", "subscriptions", "deliveries")}
    deadline = time.monotonic() + 10
    while True:
        left = {f"{svc}.{table}": await platform.runtimes[svc].pool.fetchval(  # type: ignore[union-attr]
                    f"SELECT count(*) FROM {table} WHERE tenant_id = $1", child["id"])
                for svc, names in tables.items() for table in names}
        if not any(left.values()):
            break
        assert time.monotonic() < deadline, f"tenant data left after 10 s: {left}"
        await asyncio.sleep(0.1)
    status, body, headers = await api.request("GET", "/v1/secrets", headers=there)
    assert_envelope(status, body, headers, "tenant_not_found")


async def test_user_names_are_unique_per_tenant_and_login_names_the_tenant(api: Api) -> None:
    """A name taken in another tenant is not a conflict here (which told strangers who exists there)."""
    child = await _child(api)
    username = name("alice")
    passwords = {}
    for tenant in (None, child["id"]):
        passwords[tenant] = remember_secret(f"pw-{name()}-long-enough")
        headers = {"X-Tenant-ID": tenant} if tenant else {}
        status, body, _ = await api.request("POST", "/v1/identities", headers=headers, json={
            "name": username, "kind": "user", "allowed_scopes": ["secrets:read"], "password": passwords[tenant]})
        assert status == 201, body
    status, body, headers = await api.request("POST", "/v1/identities", json={
        "name": username, "kind": "user", "allowed_scopes": [], "password": "another-password-12"})
    assert_envelope(status, body, headers, "name_conflict")  # within one tenant it still is
    _, root, _ = await api.request("GET", "/v1/auth/whoami")

    for tenant, expected in ((None, root["tenant"]["id"]), (child["id"], child["id"])):
        login = {"username": username, "password": passwords[tenant], **({"tenant_id": tenant} if tenant else {})}
        status, tok, _ = await api.request("POST", "/v1/auth/token", token=None, json=login)
        assert status == 200 and tok["tenant_id"] == expected
        remember_secret(tok["access_token"])
    for login in ({"username": username, "password": passwords[None], "tenant_id": child["id"]},
                  {"username": username, "password": passwords[child["id"]]},
                  {"username": username, "password": passwords[None], "tenant_id": "ten_nope"}):
        status, body, headers = await api.request("POST", "/v1/auth/token", token=None, json=login)
        assert_envelope(status, body, headers, "authentication_required")


# -- §2: platform-wide operations are the root tenant's -----------------------------------------------

PLATFORM_CALLS = [("POST", "/v1/sys/kms:rotate", None), ("POST", "/v1/auth/keys:rotate", None),
                  ("PUT", "/v1/sys/maintenance", {"enabled": True, "message": "mine now"}),
                  ("GET", "/v1/sys/maintenance", None)]


async def test_platform_wide_operations_are_for_root_admins_only(api: Api) -> None:
    """A child tenant's admin with an allow-everything policy is still refused; a root identity needs its policy."""
    child = await _child(api)
    everything = allow(["**"], ["read", "list", "write", "delete", "rotate", "manage", "revoke"])
    tenant_admin = await identity(api, ["admin", "secrets:read"], [everything], tenant=child["id"])
    root_no_policy = await identity(api, ["admin"])
    root_no_scope = await identity(api, ["secrets:read"], [everything])
    for method, url, body in PLATFORM_CALLS:
        status, answer, headers = await api.request(method, url, json=body, token=tenant_admin["token"])
        err = assert_envelope(status, answer, headers, "forbidden")
        assert "kek" not in str(err) and "rewrapped" not in str(err)  # no figure about anyone
        status, answer, headers = await api.request(method, url, json=body, token=root_no_policy["token"])
        assert_envelope(status, answer, headers, "access_denied")
        status, answer, headers = await api.request(method, url, json=body, token=root_no_scope["token"])
        assert_envelope(status, answer, headers, "insufficient_scope")
    status, state, _ = await api.request("GET", "/v1/sys/maintenance")
    assert status == 200 and state["enabled"] is False  # nothing was switched


# -- §3: audit lookups are no oracle; failed logins are audited; accounts lock ---------------------

async def test_audit_match_only_matches_entries_the_caller_may_read(api: Api) -> None:
    hidden, visible = remember_secret(f"hidden-{name()}"), remember_secret(f"visible-{name()}")
    base = name("audit")
    for path, value in ((f"{base}/hidden/x", hidden), (f"{base}/visible/y", visible)):
        assert (await api.request("PUT", f"/v1/secrets/{path}", json={"value": value}))[0] == 201
    auditor = await identity(api, ["admin"], [allow(["sys/audit"], ["read"]),
                                              allow([f"secrets/{base}/visible/**"], ["read"])])
    status, page, _ = await api.request("POST", "/v1/audit/events:match", json={"value": hidden},
                                        token=auditor["token"])
    assert status == 200 and page["items"] == []  # a guess at a path it can't read tells nothing
    status, page, _ = await api.request("POST", "/v1/audit/events:match", json={"value": visible},
                                        token=auditor["token"])
    assert status == 200 and [e["resource"] for e in page["items"]] == [f"secrets/{base}/visible/y"]
    status, page, _ = await api.request("POST", "/v1/audit/events:match", json={"value": hidden})
    assert status == 200  # the root admin reads everything: the write, and the auditor's own question
    assert [e["resource"] for e in page["items"]] == [f"secrets/{base}/hidden/x", "sys/audit"]


async def test_audit_match_is_rate_limited_like_authentication(tmp_path: Path, pg_dsn: str,
                                                               http: aiohttp.ClientSession) -> None:
    platform = await start_platform(tmp_path, None, pg_dsn, rate_limits="auth=3/m,read=1000/s,write=1000/s")
    try:
        api = await initialised(platform, http)
        for _ in range(2):  # sys/init spent one of the address's; these spend the identity's
            status, _, _ = await api.request("POST", "/v1/audit/events:match", json={"value": "guess"})
            assert status == 200
        answers = [await api.request("POST", "/v1/audit/events:match", json={"value": f"guess-{i}"})
                   for i in range(3)]
        status, body, headers = answers[-1]
        assert_envelope(status, body, headers, "rate_limited")
        assert body["error"]["details"]["category"] == "auth" and int(headers["Retry-After"]) > 0
        assert (await api.request("GET", "/v1/secrets"))[0] == 200  # other reads go on
    finally:
        await platform.close()


async def test_logins_are_audited_without_what_was_typed(api: Api, admin: dict[str, Any]) -> None:
    user, password, _ = await _user(api, ["secrets:read"])
    typo = remember_secret(f"{password}-typo")
    stranger = name("nobody")
    for login in ({"username": user["name"], "password": typo}, {"username": stranger, "password": typo},
                  {"client_id": admin["client_id"], "client_secret": typo}):
        status, _, _ = await api.request("POST", "/v1/auth/token", token=None, json=login)
        assert status == 401
    status, page, _ = await api.request("GET", "/v1/audit/events?limit=1000")
    logins = [e for e in page["items"] if e["action"] == "POST /v1/auth/token"]
    _, me, _ = await api.request("GET", "/v1/auth/whoami")
    failed = {e["resource"] for e in logins if e["outcome"] == "authentication_required"}
    assert {"identities/" + user["id"], "auth/token", "identities/" + me["identity"]["id"]} <= failed
    assert any(e["outcome"] == "ok" and e["resource"] == "identities/" + user["id"] for e in logins)
    assert typo not in str(page) and stranger not in str(page)  # the name tried is an HMAC only
    status, found, _ = await api.request("POST", "/v1/audit/events:match", json={"value": stranger})
    assert [e["resource"] for e in found["items"]] == ["auth/token"]  # "was this name tried?" can be asked


async def test_ten_failed_logins_lock_the_account_for_15_minutes(api: Api, platform: Platform) -> None:
    user, password, _ = await _user(api, ["secrets:read"])
    login = {"username": user["name"], "password": password}
    wrong = {**login, "password": "not the password at all"}

    async def attempt(body: dict[str, str]) -> tuple[int, Any]:
        status, answer, headers = await api.request("POST", "/v1/auth/token", token=None, json=body)
        if status == 200:
            remember_secret(answer["access_token"])
        return status, answer

    for _ in range(9):
        assert (await attempt(wrong))[0] == 401
    assert (await attempt(login))[0] == 200  # a success clears the count
    for _ in range(10):
        status, refused_wrong = await attempt(wrong)
    status, refused_right = await attempt(login)
    assert status == 401  # locked: the right password answers exactly as a wrong one
    for answer in (refused_wrong, refused_right):
        answer["error"].pop("request_id")
    assert refused_right == refused_wrong

    pool = platform.runtimes["gateway"].pool
    assert pool is not None
    key = f"user:{user['id']}"
    locked_until = await pool.fetchval("SELECT locked_until FROM login_failures WHERE key = $1", key)
    assert (await attempt(wrong))[0] == 401
    assert await pool.fetchval("SELECT locked_until FROM login_failures WHERE key = $1", key) == locked_until
    # 15 minutes later (moved back in the table rather than waited for)
    await pool.execute("UPDATE login_failures SET locked_until = now() - interval '1 second',"
                       " window_start = now() - interval '16 minutes' WHERE key = $1", key)
    assert (await attempt(login))[0] == 200

    stranger = {"username": name("nobody"), "password": "not the password at all"}
    answers = [await attempt(stranger) for _ in range(11)]
    assert {a[0] for a in answers} == {401} and len({a[1]["error"]["message"] for a in answers}) == 1


# -- §8: subscriptions respect list rights ---------------------------------------------------------

async def test_a_subscription_reveals_only_paths_its_owner_may_list_now(api: Api) -> None:
    receiver = await Receiver().start()
    try:
        base = name("hooked")
        hooks = allow(["webhooks", "webhooks/**"], ["read", "list", "write"])
        owner = await identity(api, ["webhooks", "secrets:read"],
                               [hooks, allow([f"secrets/{base}/visible/**"], ["list"])])
        status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": receiver.url}, token=owner["token"])
        assert status == 201, hook
        remember_secret(hook["secret"])
        status, _, _ = await api.request("POST", "/v1/subscriptions", token=owner["token"],
                                         json={"webhook_id": hook["id"], "event_types": ["secret.*"]})
        assert status == 201

        async def paths_received(expected: int, settle: float = 1.0) -> list[str]:
            deadline = time.monotonic() + 10
            while len(receiver.requests) < expected:
                assert time.monotonic() < deadline, [r.body for r in receiver.requests]
                await asyncio.sleep(0.05)
            await asyncio.sleep(settle)  # anything that shouldn't come would have come by now
            return [json.loads(r.body)["data"]["path"] for r in receiver.requests]

        for path in (f"{base}/hidden/a", f"{base}/visible/b"):
            assert (await api.request("PUT", f"/v1/secrets/{path}", json={"value": "v"}))[0] == 201
        assert await paths_received(1) == [f"{base}/visible/b"]

        await api.request("PUT", f"/v1/policies/{owner['policy']}", json={"rules": [hooks]})
        await asyncio.sleep(1.2)  # the gateway's answers to the dispatcher are cached up to 1 s
        assert (await api.request("PUT", f"/v1/secrets/{base}/visible/c", json={"value": "v"}))[0] == 201
        assert await paths_received(1) == [f"{base}/visible/b"]  # no longer allowed: not delivered
    finally:
        await receiver.stop()
