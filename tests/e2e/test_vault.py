"""The Vault-compatible listener (api.md §13) beside KV: health and seal status, the token calls, approle and
``jwt``/``kubernetes`` logins, namespaces as tenants (with the partner rules), errors as hvac raises them, the
same audit entry and event through both listeners, and the answers' shapes against Vault's documented examples.
Driven by an unmodified ``hvac``; one platform for the module (embedded; test_vault_kv.py runs KV + auth on
RabbitMQ too).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import hvac
import jwt
import pytest
from cryptography import x509

from services.platform import Platform
from shared.context import RequestContext
from shared.contracts.events import Event
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import allow, identity, name, totp_code
from tests.e2e.method_helpers import Issuer, make_method, put_role, serve_issuer
from tests.e2e.pki_helpers import csr_pem, make_ca, make_role
from tests.e2e.test_secrets import unique
from tests.e2e.test_tenants import EVERYTHING, SECRETS, tenant
from tests.e2e.vault_helpers import assert_shape, client_token, documented, off, vault

MAX_TTL = 120  # COFFER_VAULT_TOKEN_MAX_TTL here: renewals are capped by it


@pytest.fixture(scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform("embedded", tmp_path_factory.mktemp("vault"), pg_dsn, vault_listen="127.0.0.1:0",
                            vault_token_max_ttl=MAX_TTL) as p:
        yield p


@pytest.fixture(scope="module")
def url(platform: Platform) -> str:
    return platform.urls["vault"]


@pytest.fixture(scope="module")
async def before_init(url: str) -> Any:
    """``sys/health`` of the platform before ``sys/init`` (``api`` runs after it)."""
    return await off(vault(url).sys.read_health_status, method="GET")


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession, before_init: Any) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def issuer() -> AsyncIterator[Issuer]:
    async for served in serve_issuer():
        yield served


async def test_health_before_init_is_501_then_200_and_the_seal_status(url: str, before_init: Any,
                                                                     api: Api) -> None:
    client = vault(url)
    assert before_init.status_code == 501 and before_init.json()["initialized"] is False
    health = await off(client.sys.read_health_status, method="GET")
    assert health["initialized"] is True and health["sealed"] is False and health["standby"] is False
    assert_shape(health, documented("sys_health"))
    assert (await off(client.sys.read_health_status, method="HEAD")).status_code == 200
    custom = await off(client.sys.read_health_status, method="GET", active_code=299)
    assert custom.status_code == 299
    assert (await off(client.sys.read_health_status, method="GET", active_code=204)).status_code == 204
    async with aiohttp.ClientSession() as http:  # an informational status is no answer: refused, anonymously
        for code in ("100", "101", "199"):
            async with http.get(f"{url}/v1/sys/health", params={"activecode": code}) as resp:
                assert resp.status == 422 and (await resp.json())["error"]["code"] == "validation_error"
    seal = await off(client.sys.read_seal_status)
    assert seal["sealed"] is False and seal["initialized"] is True
    assert_shape(seal, documented("sys_seal_status"))


async def test_token_lookup_renew_and_revoke_self(api: Api, url: str) -> None:
    svc = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read"])])
    client = vault(url, svc["token"])
    looked = await off(client.auth.token.lookup_self)
    assert looked["data"]["entity_id"] == svc["id"] and looked["data"]["policies"] == [svc["policy"]]
    assert looked["data"]["id"] == svc["token"] and 0 < looked["data"]["ttl"] <= 3600
    assert_shape(looked, documented("token_lookup_self"))
    renewed = await off(client.auth.token.renew_self)
    fresh = client_token(renewed)
    assert fresh != svc["token"] and renewed["auth"]["entity_id"] == svc["id"]
    assert 0 < renewed["auth"]["lease_duration"] <= MAX_TTL  # COFFER_VAULT_TOKEN_MAX_TTL after the login
    assert_shape(renewed, documented("token_renew_self"))
    shorter = await off(vault(url, fresh).auth.token.renew_self, increment="30s")
    assert shorter["auth"]["lease_duration"] == 30
    assert (await off(vault(url, fresh).auth.token.renew_self, increment=20))["auth"]["lease_duration"] == 20
    await off(vault(url, fresh).auth.token.revoke_self)
    with pytest.raises(hvac.exceptions.Unauthorized) as revoked:
        await off(vault(url, fresh).auth.token.lookup_self)
    assert revoked.value.json["error"]["code"] == "token_revoked"
    with pytest.raises(hvac.exceptions.Unauthorized):  # the login's token too: Vault's renewals are one token
        await off(client.auth.token.lookup_self)


async def revoked(url: str, *tokens: str) -> None:
    for token in tokens:
        with pytest.raises(hvac.exceptions.Unauthorized) as refused:
            await off(vault(url, token).auth.token.renew_self)
        assert refused.value.json["error"]["code"] == "token_revoked"


async def test_revoking_any_token_of_a_renewal_chain_revokes_every_renewal(api: Api, url: str) -> None:
    """Attack: whoever holds a stolen token renews it once; the owner revokes the stolen token, and the renewal
    (which renews itself on and on) kept the access until COFFER_VAULT_TOKEN_MAX_TTL after the login."""
    svc = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read"])])
    stolen = svc["token"]
    child = client_token(await off(vault(url, stolen).auth.token.renew_self))
    grandchild = client_token(await off(vault(url, child).auth.token.renew_self))
    assert (await api.request("POST", "/v1/auth/revoke", token=stolen, json={"token": stolen}))[0] == 204
    await revoked(url, stolen, child, grandchild)
    # an admin revoking the accessor lookup-self shows (the same for every renewal of a login)
    svc = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read"])])
    child = client_token(await off(vault(url, svc["token"]).auth.token.renew_self))
    accessor = (await off(vault(url, child).auth.token.lookup_self))["data"]["accessor"]
    assert accessor == (await off(vault(url, svc["token"]).auth.token.lookup_self))["data"]["accessor"]
    assert (await api.request("POST", "/v1/auth/revoke", json={"jti": accessor}))[0] == 204
    await revoked(url, svc["token"], child)
    # a step-up (main API) of a renewal stays in the chain: revoked with it, and no new max-TTL clock
    password = remember_secret("correct horse battery " + name("staple"))
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": name("user"), "kind": "user", "allowed_scopes": ["secrets:read"], "password": password})
    assert status == 201
    status, login, _ = await api.request("POST", "/v1/auth/token", token=None,
                                         json={"username": user["name"], "password": password})
    first = remember_secret(login["access_token"])
    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp", token=first)
    assert status == 201
    child = client_token(await off(vault(url, first).auth.token.renew_self))
    status, stepped, _ = await api.request("POST", "/v1/auth/mfa", token=child,
                                           json={"totp_code": totp_code(remember_secret(enrol["otpauth_uri"]))})
    assert status == 200
    claims = jwt.decode(remember_secret(stepped["access_token"]), options={"verify_signature": False})
    assert claims["auth_time"] == jwt.decode(first, options={"verify_signature": False})["iat"]
    assert (await api.request("POST", "/v1/auth/revoke", token=first, json={"token": first}))[0] == 204
    await revoked(url, child, stepped["access_token"])


async def test_a_renewal_holds_only_while_the_login_would(api: Api, url: str, issuer: Issuer) -> None:
    """Attack: renew-self is a login without credentials. A token of a jwt method kept renewing itself for
    COFFER_VAULT_TOKEN_MAX_TTL after an admin deleted the method (the switch that cuts off a compromised
    cluster: its tokens lived the role's 10 minutes on the main API); a user's password-only token kept renewing
    after the user's TOTP became required at login."""
    iss_name, iss_url = issuer.add()
    method = name("k8s")
    await make_method(api, iss_url, name=method)
    await put_role(api, method, "app", bound_audiences=["coffer"], scopes=["secrets:read"], ttl="10m")
    token = client_token(await off(vault(url).auth.jwt.jwt_login, role="app", jwt=issuer.mint(iss_name), path=method))
    renewed = client_token(await off(vault(url, token).auth.token.renew_self))
    assert (await api.request("DELETE", f"/v1/auth/methods/{method}"))[0] == 204
    with pytest.raises(hvac.exceptions.Forbidden) as refused:
        await off(vault(url, renewed).auth.token.renew_self)
    assert refused.value.json["error"]["details"]["reason"] == "method_deleted"
    password = remember_secret("correct horse battery " + name("staple"))
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": name("user"), "kind": "user", "allowed_scopes": ["secrets:read"], "password": password})
    status, login, _ = await api.request("POST", "/v1/auth/token", token=None,
                                         json={"username": user["name"], "password": password})
    password_only = remember_secret(login["access_token"])
    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp", token=password_only)
    assert status == 201
    client_token(await off(vault(url, password_only).auth.token.renew_self))  # no MFA required yet
    status, stepped, _ = await api.request("POST", "/v1/auth/mfa", token=password_only,
                                           json={"totp_code": totp_code(remember_secret(enrol["otpauth_uri"]))})
    assert status == 200
    assert (await api.request("PATCH", f"/v1/identities/{user['id']}", json={"require_mfa": True}))[0] == 200
    with pytest.raises(hvac.exceptions.Forbidden) as refused:
        await off(vault(url, password_only).auth.token.renew_self)
    assert refused.value.json["error"]["details"]["reason"] == "mfa_required"
    client_token(await off(vault(url, remember_secret(stepped["access_token"])).auth.token.renew_self))


async def test_approle_login_is_a_service_identitys_client_credentials(api: Api, url: str) -> None:
    svc = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read"])])
    client = vault(url)
    answer = await off(client.auth.approle.login, role_id=svc["client_id"], secret_id=svc["client_secret"])
    assert client.token == client_token(answer) and answer["auth"]["token_policies"] == [svc["policy"]]
    assert_shape(answer, documented("approle_login"))
    assert_shape(answer["auth"], documented("token_create")["auth"])  # Vault's whole auth block
    assert (await off(client.auth.token.lookup_self))["data"]["entity_id"] == svc["id"]
    with pytest.raises(hvac.exceptions.Unauthorized) as refused:
        await off(vault(url).auth.approle.login, role_id=svc["client_id"], secret_id="cs_wrong")
    assert refused.value.json["error"]["code"] == "authentication_required"
    status, page, _ = await api.request("GET", f"/v1/audit/events?identity_id={svc['id']}")
    assert status == 200 and {(e["listener"], e["outcome"]) for e in page["items"]} >= {
        ("vault", "ok"), ("vault", "authentication_required")}


async def test_jwt_and_kubernetes_logins_are_the_jwt_methods(api: Api, url: str, issuer: Issuer) -> None:
    base = unique("wl")
    status, _, _ = await api.request("PUT", f"/v1/secrets/{base}/db", json={"value": remember_secret(name("v"))})
    assert status == 201
    policy = name("p")
    status, _, _ = await api.request("POST", "/v1/policies", json={
        "name": policy, "rules": [allow([f"secrets/{base}/**"], ["read"])]})
    assert status == 201
    iss_name, iss_url = issuer.add()
    for method, login in (("kubernetes", lambda c, t: c.auth.kubernetes.login(role="app", jwt=t)),
                          ("jwt", lambda c, t: c.auth.jwt.jwt_login(role="app", jwt=t, path="jwt"))):
        await make_method(api, iss_url, name=method)
        await put_role(api, method, "app", bound_audiences=["coffer"], scopes=["secrets:read"], policies=[policy],
                       ttl="10m")
        client = vault(url)
        answer = await off(login, client, issuer.mint(iss_name))
        assert client.token == client_token(answer) and answer["auth"]["lease_duration"] == 600
        assert_shape(answer, documented(f"{method}_login"))
        read = await off(client.secrets.kv.v2.read_secret_version, path=f"{base}/db", raise_on_deleted_version=True)
        assert read["data"]["metadata"]["version"] == 1
        with pytest.raises(hvac.exceptions.Unauthorized) as refused:
            await off(login, vault(url), issuer.mint(iss_name, aud="someone-else"))
        assert refused.value.json["error"]["details"]["reason"] == "audience"
        with pytest.raises(hvac.exceptions.InvalidPath):  # role_not_found, in any tenant it doesn't exist in
            await off(lambda: vault(url, namespace="ten_0000").auth.kubernetes.login(role="app", jwt="x.y.z"))


async def test_namespaces_are_tenants_with_the_partner_rules(api: Api, url: str) -> None:
    child, other_partner = await tenant(api), await tenant(api, "partner")
    admin = vault(url, api.token, namespace=child["name"])  # the root admin is a partner admin
    path = f"{unique('ns')}/db"
    await off(admin.secrets.kv.v2.create_or_update_secret, path=path, secret={"k": "v"})
    status, seen, _ = await api.request("GET", f"/v1/secrets/{path}", headers={"X-Tenant-ID": child["id"]})
    assert status == 200 and seen["value"] == {"k": "v"}
    status, _, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert status == 404  # not in the admin's own tenant
    by_id = vault(url, api.token, namespace=child["id"] + "/")
    assert (await off(by_id.secrets.kv.v2.read_secret_version, path=path, raise_on_deleted_version=True))[
        "data"]["data"] == {"k": "v"}
    with pytest.raises(hvac.exceptions.InvalidPath) as unknown:  # a partner admin naming no tenant
        await off(vault(url, api.token, namespace=name("nope")).auth.token.lookup_self)
    assert unknown.value.json["error"]["code"] == "tenant_not_found"
    member = await identity(api, SECRETS, EVERYTHING, tenant=child["id"])
    outsider = await identity(api, SECRETS, EVERYTHING, tenant=other_partner["id"], partner_admin=True)
    for token, namespace in ((member["token"], "root"), (member["token"], name("nope")),
                             (outsider["token"], child["id"])):
        with pytest.raises(hvac.exceptions.Forbidden) as denied:  # the same answer, existing or not
            await off(vault(url, token, namespace=namespace).secrets.kv.v2.read_secret_version, path=path,
                      raise_on_deleted_version=True)
        assert denied.value.json["error"]["code"] == "tenant_access_denied"
    for namespace in (child["name"], name("nope")):  # another partner's tenant's name: as if there were none
        with pytest.raises(hvac.exceptions.InvalidPath) as hidden:
            await off(vault(url, outsider["token"], namespace=namespace).auth.token.lookup_self)
        assert hidden.value.json["error"]["code"] == "tenant_not_found"
    own = vault(url, member["token"])  # no namespace: the caller's own tenant
    assert (await off(own.secrets.kv.v2.read_secret_version, path=path, raise_on_deleted_version=True))[
        "data"]["data"] == {"k": "v"}


async def test_refusals_are_coffers_codes_with_vaults_errors(api: Api, url: str, http: aiohttp.ClientSession) -> None:
    reader = await identity(api, ["secrets:read"], [allow(["secrets/mine/**"], ["read"])])
    cases: list[tuple[Any, type[Exception], str]] = [
        (lambda: vault(url, "not-a-token").auth.token.lookup_self(), hvac.exceptions.Unauthorized, "token_invalid"),
        (lambda: vault(url).auth.token.lookup_self(), hvac.exceptions.Unauthorized, "authentication_required"),
        (lambda: vault(url, reader["token"]).secrets.kv.v2.read_secret_version(
            path="theirs/x", raise_on_deleted_version=True), hvac.exceptions.Forbidden, "access_denied"),
        (lambda: vault(url, reader["token"]).secrets.kv.v2.create_or_update_secret(
            path="mine/x", secret={"a": "b"}), hvac.exceptions.Forbidden, "insufficient_scope"),
    ]
    for call, raised, code in cases:
        with pytest.raises(raised) as caught:
            await off(call)
        assert caught.value.json["error"]["code"] == code and caught.value.errors == [caught.value.json["error"][
            "message"]]
    async with http.get(f"{url}/v1/secret/data/mine/x", headers={"X-Vault-Token": reader["token"]}) as resp:
        assert resp.status == 404 and resp.headers["Content-Type"] == "application/json"
        assert {"X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining"} <= set(resp.headers)
        assert resp.headers["Cache-Control"] == "no-store"
    status, _, _ = await api.request("PUT", "/v1/sys/maintenance", json={"enabled": True, "message": "upgrading"})
    assert status == 200
    try:
        with pytest.raises(hvac.exceptions.VaultDown) as down:
            await off(vault(url, api.token).auth.token.lookup_self)
        assert down.value.json["error"]["code"] == "maintenance_mode"
        assert (await off(vault(url).sys.read_health_status, method="GET"))["initialized"] is True
    finally:
        await api.request("PUT", "/v1/sys/maintenance", json={"enabled": False})


async def test_mounts_show_the_kv_mount_as_vault_lists_mounts(api: Api, url: str) -> None:
    client = vault(url, api.token)
    mounts = await off(client.sys.list_mounted_secrets_engines)
    assert mounts["data"]["secret/"]["options"] == {"version": "2"} and mounts["data"]["secret/"]["type"] == "kv"
    theirs = documented("sys_mounts")
    assert_shape({**mounts, "data": {}}, {**theirs, "data": {}})
    assert_shape(mounts["data"]["secret/"], theirs["data"]["secret/"])
    probe = await off(client.adapter.get, "/v1/sys/internal/ui/mounts/secret/app/db")
    assert probe["data"]["path"] == "secret/" and probe["data"]["options"]["version"] == "2"
    assert_shape(probe["data"], documented("sys_mount_one")["data"])
    with pytest.raises(hvac.exceptions.InvalidRequest):
        await off(client.adapter.get, "/v1/sys/internal/ui/mounts/elsewhere/x")


async def test_a_request_through_either_listener_leaves_the_same_audit_entry_and_event(
        api: Api, url: str, platform: Platform) -> None:
    path, data = f"{unique('same')}/cfg", {"k": remember_secret(name("v"))}
    events: list[Event] = []
    all_three = asyncio.Event()

    async def on(event: Event, ctx: RequestContext) -> None:
        events.append(event)
        if len([e for e in events if e.data.get("path") == path]) == 3:
            all_three.set()

    await platform.bus.subscribe(name("vault-events"), ["secret.#"], on)
    status, _, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": data, "secret_type": "json"})
    assert status == 201
    await off(vault(url, api.token).secrets.kv.v2.create_or_update_secret, path=path, secret=data)  # version 2
    status, _, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": data, "secret_type": "json"})
    assert status == 200  # version 3
    await asyncio.wait_for(all_three.wait(), 5)  # the outbox relay publishes within its poll interval
    by_version = {e.data["version"]: e for e in events if e.data.get("path") == path}
    vault_event, api_event = by_version[2], by_version[3]
    assert (vault_event.type, vault_event.tenant_id) == (api_event.type, api_event.tenant_id) == (
        "secret.updated", api_event.tenant_id)
    assert {**vault_event.data, "version": 0} == {**api_event.data, "version": 0}
    status, page, _ = await api.request("GET", f"/v1/audit/events?path_prefix=secrets/{path}")
    writes = [e for e in page["items"] if e["action"].endswith("(write)")]
    assert [e["listener"] for e in writes] == ["api", "vault", "api"]
    through_vault, through_api = writes[1], writes[2]
    for key in ("identity_id", "resource", "outcome", "status", "client_ip", "fields"):
        assert through_vault[key] == through_api[key], key
    assert through_vault["fields"]["value"]  # the value's HMAC, the same for the same value
    status, verified, _ = await api.request("GET", "/v1/audit/verify")
    assert status == 200 and verified["ok"] is True


async def test_pki_issue_and_sign_are_the_roles_in_vaults_shape(api: Api, url: str) -> None:
    role = await make_role(api, (await make_ca(api))["id"], key_type="rsa-2048")
    ec_role = await make_role(api, (await make_ca(api))["id"])
    client = vault(url, api.token)
    issued = await off(client.secrets.pki.generate_certificate, role, "www.example.com",
                       extra_params={"alt_names": "a.example.com,b.example.com", "ttl": "1h"})
    remember_secret(issued["data"]["private_key"].strip().splitlines()[1])
    data = issued["data"]
    cert = x509.load_pem_x509_certificate(data["certificate"].encode())
    assert int(data["serial_number"].replace(":", ""), 16) == cert.serial_number
    assert data["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----") and data["private_key_type"] == "rsa"
    assert data["issuing_ca"] == data["ca_chain"][0] and data["expiration"] == int(
        cert.not_valid_after_utc.timestamp())
    assert {n.value for n in cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value} >= {
        "a.example.com", "b.example.com"}
    quirks = {"$.data.expiration": "number", "$.warnings": "null"}  # the fixture's note says why
    assert_shape(issued, documented("pki_issue"), allow=quirks)
    ec_key = await off(client.secrets.pki.generate_certificate, ec_role, "x.example.com")
    remember_secret(ec_key["data"]["private_key"].strip().splitlines()[1])
    assert ec_key["data"]["private_key"].startswith("-----BEGIN EC PRIVATE KEY-----")
    pkcs8 = await off(client.secrets.pki.generate_certificate, ec_role, "y.example.com",
                      extra_params={"private_key_format": "pkcs8"})
    remember_secret(pkcs8["data"]["private_key"].strip().splitlines()[1])
    assert pkcs8["data"]["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    signed = await off(client.secrets.pki.sign_certificate, ec_role, csr_pem("z.example.com"), "z.example.com")
    assert x509.load_pem_x509_certificate(signed["data"]["certificate"].encode()).subject.rfc4514_string() == (
        "CN=z.example.com")
    assert_shape(signed, documented("pki_sign"), allow=quirks)
    with pytest.raises(hvac.exceptions.InvalidRequest) as refused:  # a name the role doesn't allow
        await off(client.secrets.pki.generate_certificate, role, "www.elsewhere.org")
    assert refused.value.json["error"]["code"] == "domain_not_allowed"
    with pytest.raises(hvac.exceptions.UnexpectedError):  # 422: what Coffer's roles don't issue
        await off(client.secrets.pki.generate_certificate, role, "www.example.com",
                  extra_params={"uri_sans": "spiffe://x"})
    narrow = await identity(api, ["pki"], [allow([f"pki/roles/{ec_role}"], ["sign"])])
    with pytest.raises(hvac.exceptions.Forbidden) as denied:  # sign, but not issue, on that role
        await off(vault(url, narrow["token"]).secrets.pki.generate_certificate, ec_role, "w.example.com")
    assert denied.value.json["error"]["code"] == "access_denied"


async def test_a_tenants_quotas_count_through_both_listeners(api: Api, url: str) -> None:
    child = await tenant(api)
    admin = await identity(api, SECRETS, EVERYTHING, tenant=child["id"])
    status, _, _ = await api.request("PATCH", f"/v1/tenants/{child['id']}",
                                     json={"quotas": {"max_secrets": 1, "requests_per_minute": 4}})
    assert status == 200
    if time.time() % 60 > 52:  # the count is per calendar minute: all five calls in one
        await asyncio.sleep(60.5 - time.time() % 60)
    client = vault(url, admin["token"])
    await off(client.secrets.kv.v2.create_or_update_secret, path="q/one", secret={"a": "b"})  # 1
    with pytest.raises(hvac.exceptions.RateLimitExceeded) as full:  # 2: the tenant's max_secrets
        await off(client.secrets.kv.v2.create_or_update_secret, path="q/two", secret={"a": "b"})
    assert full.value.json["error"]["details"]["quota"] == "max_secrets"
    assert (await api.request("GET", "/v1/auth/whoami", token=admin["token"]))[0] == 200  # 3
    assert (await off(client.auth.token.lookup_self))["data"]["entity_id"] == admin["id"]  # 4
    status, body, headers = await api.request("GET", "/v1/auth/whoami", token=admin["token"])  # 5
    assert status == 429 and body["error"]["details"]["quota"] == "requests_per_minute" and headers["Retry-After"]
