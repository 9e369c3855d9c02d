"""The PKI's error codes, its policy and tenancy, and hostile input, through the gateway (on RabbitMQ).

What an ordinary account of another tenant, a helpdesk identity with one
narrow policy, or a role manager could make the PKI do — and can't.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from services.pki import keys
from services.pki.authority import ca_aad
from services.platform import Platform
from shared.crypto import Sealed, unseal
from shared.errors import EncryptionError
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.pki_helpers import csr_pem, issue, make_ca, make_role, unique
from tests.e2e.test_gateway_envelope import assert_envelope

PKI_ALL = ["read", "list", "write", "delete", "issue", "sign", "approve", "revoke", "manage"]


@pytest.fixture(scope="module")
async def setup(admin: dict[str, Any]) -> dict[str, Any]:
    api: Api = admin["api"]
    ca = await make_ca(api)
    role = await make_role(api, ca["id"], allow_wildcards=True, ttl="24h", max_ttl="48h")
    return {"ca": ca, "role": role}


async def count(platform: Platform, pg_dsn: str, table: str) -> int:
    conn = await asyncpg.connect(pg_dsn)
    try:
        schema = platform.values["schema_prefix"] + "pki"
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".{table}'))
    finally:
        await conn.close()


async def test_every_pki_error_code_with_its_envelope(api: Api, setup: dict[str, Any]) -> None:
    ca, role = setup["ca"], setup["role"]

    async def expect(code: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        status, body, headers = await api.request(method, path, **kwargs)
        return assert_envelope(status, body, headers, code)

    await expect("ca_not_found", "GET", "/v1/pki/cas/ca_nope")
    await expect("ca_not_found", "GET", "/v1/pki/cas/ca_nope/chain")
    await expect("ca_not_found", "GET", "/v1/pki/cas/ca_nope/crl", token=None)
    await expect("ca_not_found", "DELETE", "/v1/pki/cas/ca_nope")
    await expect("ca_not_found", "POST", "/v1/pki/cas", json={"name": unique(), "common_name": "x", "ttl": "1h",
                                                              "parent_id": "ca_nope"})
    await expect("ca_not_found", "PUT", f"/v1/pki/roles/{unique('r')}", json={"ca_id": "ca_nope"})
    await expect("name_conflict", "POST", "/v1/pki/cas", json={"name": ca["name"], "common_name": "x", "ttl": "1h"})
    await expect("invalid_duration", "POST", "/v1/pki/cas", json={"name": unique(), "common_name": "x", "ttl": "1y"})
    await expect("ttl_exceeds_max", "POST", "/v1/pki/cas", json={
        "name": unique(), "common_name": "x", "ttl": "87600h", "parent_id": ca["id"]})  # outlives its parent
    await expect("role_not_found", "GET", "/v1/pki/roles/nope")
    await expect("role_not_found", "DELETE", "/v1/pki/roles/nope")
    await expect("role_not_found", "POST", "/v1/pki/roles/nope:issue", json={"common_name": "a.example.com"})
    for bad in ("Upper", "-dash", "a" * 64, "ключ", "a.b"):
        await expect("invalid_role", "PUT", f"/v1/pki/roles/{bad}", json={"ca_id": ca["id"]})
    await expect("invalid_role", "POST", "/v1/pki/roles/UPPER:issue", json={"common_name": "a.example.com"})
    issue_path = f"/v1/pki/roles/{role}:issue"
    err = await expect("domain_not_allowed", "POST", issue_path, json={"common_name": "www.example.org"})
    assert err["details"]["name"] == "www.example.org"
    await expect("domain_not_allowed", "POST", issue_path, json={"common_name": "a.example.com",
                                                                 "alt_names": ["b.example.com", "evil.com"]})
    await expect("domain_not_allowed", "POST", issue_path, json={"common_name": "a.example.com."})
    await expect("domain_not_allowed", "POST", issue_path, json={"common_name": "*.*.example.com"})
    await expect("ttl_exceeds_max", "POST", issue_path, json={"common_name": "a.example.com", "ttl": "49h"})
    await expect("invalid_duration", "POST", issue_path, json={"common_name": "a.example.com", "ttl": "soon"})
    any_role = await make_role(api, ca["id"], key_type="any")
    await expect("key_type_mismatch", "POST", f"/v1/pki/roles/{any_role}:issue", json={"common_name": "a.example.com"})
    p384 = csr_pem("a.example.com", key=ec.generate_private_key(ec.SECP384R1()))
    await expect("key_type_mismatch", "POST", f"/v1/pki/roles/{role}:sign", json={"csr": p384})
    await expect("csr_invalid", "POST", f"/v1/pki/roles/{role}:sign",
                 json={"csr": "-----BEGIN CERTIFICATE REQUEST-----"})
    await expect("csr_invalid", "POST", "/v1/pki/csrs", json={"csr": "garbage", "role": role})
    await expect("role_not_found", "POST", "/v1/pki/csrs", json={"csr": csr_pem("a.example.com"), "role": "nope"})
    await expect("csr_not_found", "GET", "/v1/pki/csrs/csr_nope")
    await expect("csr_not_found", "POST", "/v1/pki/csrs/csr_nope:approve")
    await expect("certificate_not_found", "GET", "/v1/pki/certificates/abcdef")
    await expect("certificate_not_found", "POST", "/v1/pki/certificates/abcdef:revoke", json={})
    await expect("validation_error", "GET", "/v1/pki/certificates/not-hex")
    await expect("trust_anchor_not_found", "GET", "/v1/pki/trust-anchors/ta_nope")
    await expect("trust_anchor_not_found", "DELETE", "/v1/pki/trust-anchors/ta_nope")
    leaf = await issue(api, role, "leaf.example.com")
    err = await expect("validation_error", "POST", "/v1/pki/trust-anchors",
                       json={"name": unique(), "certificate": leaf["certificate"]})
    assert err["details"]["fields"][0]["field"] == "certificate"
    await expect("validation_error", "POST", f"/v1/pki/certificates/{leaf['serial']}:revoke",
                 json={"reason": "remove_from_crl"})
    await expect("ca_has_certificates", "DELETE", f"/v1/pki/cas/{ca['id']}")
    status, anchor, _ = await api.request("POST", "/v1/pki/trust-anchors",
                                          json={"name": unique(), "certificate": ca["certificate"]})
    assert status == 201 and anchor["id"].startswith("ta_")
    await expect("name_conflict", "POST", "/v1/pki/trust-anchors",
                 json={"name": anchor["name"], "certificate": ca["certificate"]})


async def test_a_ca_without_certificates_can_be_deleted_and_roles_then_answer_ca_not_found(api: Api) -> None:
    ca = await make_ca(api)
    role = await make_role(api, ca["id"])
    assert (await api.request("DELETE", f"/v1/pki/cas/{ca['id']}"))[0] == 204
    status, body, headers = await api.request("POST", f"/v1/pki/roles/{role}:issue",
                                              json={"common_name": "example.com"})
    assert_envelope(status, body, headers, "ca_not_found")


async def test_quota_max_certificates_answers_429_with_retry_after(api: Api, setup: dict[str, Any]) -> None:
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("ten")})
    assert status == 201
    there = {"X-Tenant-ID": tenant["id"]}
    quota = {"quotas": {"max_certificates": 2}}
    assert (await api.request("PATCH", f"/v1/tenants/{tenant['id']}", json=quota))[0] == 200
    ca = await make_ca(api, headers=there)
    role = await make_role(api, ca["id"], headers=there)
    for i in range(2):
        await issue(api, role, f"q{i}.example.com", headers=there)
    status, body, headers = await api.request("POST", f"/v1/pki/roles/{role}:issue", headers=there,
                                              json={"common_name": "q3.example.com"})
    err = assert_envelope(status, body, headers, "quota_exceeded")
    assert err["details"] == {"quota": "max_certificates", "limit": 2}
    assert 0 < int(headers["Retry-After"]) <= 24 * 3600 + 60  # when the first of them expires
    status, page, _ = await api.request("GET", "/v1/pki/certificates", headers=there)
    assert len(page["items"]) == 2


async def test_another_tenant_sees_and_touches_nothing(api: Api, setup: dict[str, Any]) -> None:
    ca, role = setup["ca"], setup["role"]
    cert = await issue(api, role, "mine.example.com")
    status, csr, _ = await api.request("POST", "/v1/pki/csrs", json={"csr": csr_pem("c.example.com"), "role": role})
    assert status == 201
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("ten")})
    stranger = await identity(api, ["pki"], [allow(["**"], PKI_ALL)], tenant=tenant["id"])
    t = stranger["token"]
    for method, path, code in (
            ("GET", f"/v1/pki/cas/{ca['id']}", "ca_not_found"),
            ("GET", f"/v1/pki/cas/{ca['id']}/chain", "ca_not_found"),
            ("DELETE", f"/v1/pki/cas/{ca['id']}", "ca_not_found"),
            ("GET", f"/v1/pki/roles/{role}", "role_not_found"),
            ("GET", f"/v1/pki/certificates/{cert['serial']}", "certificate_not_found"),
            ("GET", f"/v1/pki/csrs/{csr['id']}", "csr_not_found"),
            ("POST", f"/v1/pki/csrs/{csr['id']}:approve", "csr_not_found")):
        status, body, headers = await api.request(method, path, token=t)
        assert_envelope(status, body, headers, code)
    status, body, headers = await api.request("POST", f"/v1/pki/certificates/{cert['serial']}:revoke", token=t,
                                              json={"reason": "key_compromise"})
    assert_envelope(status, body, headers, "certificate_not_found")
    status, body, headers = await api.request("POST", f"/v1/pki/roles/{role}:issue", token=t,
                                              json={"common_name": "www.example.com"})
    assert_envelope(status, body, headers, "role_not_found")
    # a role of their own pointed at our CA, an intermediate under it: not found either
    status, body, headers = await api.request("PUT", "/v1/pki/roles/hijack", token=t, json={"ca_id": ca["id"]})
    assert_envelope(status, body, headers, "ca_not_found")
    status, body, headers = await api.request("POST", "/v1/pki/cas", token=t, json={
        "name": unique(), "common_name": "x", "ttl": "1h", "parent_id": ca["id"]})
    assert_envelope(status, body, headers, "ca_not_found")
    for path in ("/v1/pki/cas", "/v1/pki/roles", "/v1/pki/certificates", "/v1/pki/csrs", "/v1/pki/trust-anchors"):
        status, page, _ = await api.request("GET", path, token=t)
        assert status == 200 and page["items"] == [], path
    status, bundle, _ = await api.request("GET", "/v1/pki/trust-bundle", token=t)
    assert status == 200 and bundle is None  # empty: none of ours
    status, got, _ = await api.request("GET", f"/v1/pki/certificates/{cert['serial']}")
    assert got["status"] == "valid"  # still ours, unrevoked


async def test_a_narrow_identity_does_only_what_its_policy_says(api: Api, setup: dict[str, Any]) -> None:
    ca, role = setup["ca"], setup["role"]
    other_role = await make_role(api, ca["id"])
    others_cert = await issue(api, other_role, "other.example.com")
    helpdesk = await identity(api, ["pki"], [allow([f"pki/roles/{role}"], ["issue", "read"])])
    t = helpdesk["token"]
    mine = await issue(api, role, "help.example.com", token=t)
    status, body, headers = await api.request("POST", f"/v1/pki/roles/{other_role}:issue", token=t,
                                              json={"common_name": "x.example.com"})
    assert_envelope(status, body, headers, "access_denied")
    status, body, headers = await api.request("PUT", f"/v1/pki/roles/{role}", token=t,
                                              json={"ca_id": ca["id"], "allowed_domains": ["evil.com"]})
    assert_envelope(status, body, headers, "access_denied")  # can't widen its own role
    status, body, headers = await api.request("POST", "/v1/pki/cas", token=t,
                                              json={"name": unique(), "common_name": "x", "ttl": "1h"})
    assert_envelope(status, body, headers, "access_denied")
    # its own role's certificates it may read (through the role), not revoke; others' it can't even see
    assert (await api.request("GET", f"/v1/pki/certificates/{mine['serial']}", token=t))[0] == 200
    status, body, headers = await api.request("POST", f"/v1/pki/certificates/{mine['serial']}:revoke", token=t,
                                              json={})
    assert_envelope(status, body, headers, "access_denied")
    for method, path in (("GET", f"/v1/pki/certificates/{others_cert['serial']}"),
                         ("POST", f"/v1/pki/certificates/{others_cert['serial']}:revoke")):
        status, body, headers = await api.request(method, path, token=t, json={})
        assert_envelope(status, body, headers, "certificate_not_found")
    status, page, _ = await api.request("GET", "/v1/pki/certificates", token=t)
    assert page["items"] == []  # no list capability

    # a role manager without a say over the CA can't aim a role at it
    manager = await identity(api, ["pki"], [allow(["pki/roles/*"], ["manage"])])
    status, body, headers = await api.request("PUT", f"/v1/pki/roles/{unique('r')}", token=manager["token"],
                                              json={"ca_id": ca["id"], "allowed_domains": ["bank.com"]})
    assert_envelope(status, body, headers, "access_denied")
    # and without the pki scope nothing at all
    outsider = await identity(api, ["secrets:read"], [allow(["**"], PKI_ALL)])
    status, body, headers = await api.request("GET", "/v1/pki/cas", token=outsider["token"])
    assert_envelope(status, body, headers, "insufficient_scope")


async def test_hostile_input_is_refused_and_nothing_is_stored(api: Api, setup: dict[str, Any], platform: Platform,
                                                              pg_dsn: str) -> None:
    role = setup["role"]
    before = await count(platform, pg_dsn, "certificates")
    issue_path = f"/v1/pki/roles/{role}:issue"
    cases: list[tuple[dict[str, Any] | bytes, str]] = [
        ({"common_name": 5}, "validation_error"),
        ({"common_name": "a.example.com", "alt_names": "b.example.com"}, "validation_error"),
        ({"common_name": "a.example.com", "alt_names": [f"h{i}.example.com" for i in range(101)]}, "validation_error"),
        ({"common_name": "a" * 2000}, "validation_error"),
        ({"common_name": "x" * 60 + ".example.com"}, "validation_error"),  # a CN past X.520's 64
        ({"common_name": "a.example.com", "extra": 1}, "validation_error"),
        ({}, "validation_error"),
        ({"common_name": "ünïcödé.example.com\u0000"}, "validation_error"),  # no NUL in any request string
        ({"common_name": "ünïcödé.exa mple.com"}, "domain_not_allowed"),
        ({"common_name": "a.example.com", "ip_sans": ["999.1.1.1"]}, "domain_not_allowed"),
        (b"not json", "invalid_request"),
        (b"[1, 2]", "invalid_request"),
    ]
    for body, code in cases:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        status, answer, headers = await api.request("POST", issue_path, **kwargs)
        assert_envelope(status, answer, headers, code)
    status, answer, headers = await api.request("POST", f"/v1/pki/roles/{role}:sign", json={"csr": "A" * 70_000})
    assert_envelope(status, answer, headers, "validation_error")
    status, answer, headers = await api.request("POST", f"/v1/pki/roles/{role}:sign",
                                                data=b'{"csr": "' + b"A" * 3_000_000 + b'"}')
    assert_envelope(status, answer, headers, "invalid_request")  # past the body limit
    for path in ("/v1/pki/roles/..%2F..%2Fsecrets:issue", "/v1/pki/roles/a:evil", "/v1/pki/roles/%00:issue"):
        status, answer, headers = await api.request("POST", path, json={"common_name": "a.example.com"})
        assert status in (400, 404) and answer["error"]["code"] in ("invalid_request", "invalid_role"), (path, answer)
    assert await count(platform, pg_dsn, "certificates") == before  # nothing issued by any of it

    private_key = (await issue(api, role, "k.example.com"))["private_key"]
    status, answer, headers = await api.request("POST", f"/v1/pki/roles/{role}:sign", json={"csr": private_key})
    err = assert_envelope(status, answer, headers, "csr_invalid")
    assert "PRIVATE" not in repr(err)  # an error never echoes what it was given


async def test_a_deleted_tenant_loses_its_cas_and_keys(api: Api, platform: Platform, pg_dsn: str) -> None:
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("ten")})
    there = {"X-Tenant-ID": tenant["id"]}
    ca = await make_ca(api, headers=there)
    await issue(api, await make_role(api, ca["id"], headers=there), headers=there)
    assert (await api.request("DELETE", f"/v1/tenants/{tenant['id']}"))[0] == 204
    schema = platform.values["schema_prefix"] + "pki"
    conn = await asyncpg.connect(pg_dsn)
    try:
        async def left() -> int:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".cas WHERE tenant_id = $1', tenant["id"]))

        deadline = asyncio.get_running_loop().time() + 15
        while await left():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        assert not await conn.fetchval(f'SELECT count(*) FROM "{schema}".certificates WHERE tenant_id = $1',
                                       tenant["id"])
        outbox = await conn.fetch(f'SELECT data::text AS data FROM "{schema}".outbox')
        assert outbox and not any("PRIVATE KEY" in r["data"] for r in outbox)
        sealed = await conn.fetch(f'SELECT ciphertext FROM "{schema}".cas')
        assert all(b"PRIVATE" not in r["ciphertext"] for r in sealed)  # keys only sealed
    finally:
        await conn.close()
    status, body, headers = await api.request("GET", f"/v1/pki/cas/{ca['id']}/crl", token=None)
    assert_envelope(status, body, headers, "ca_not_found")


async def test_kek_rotation_rewraps_ca_keys_and_issuing_goes_on(api: Api, setup: dict[str, Any]) -> None:
    status, body, _ = await api.request("POST", "/v1/sys/kms:rotate")
    assert status == 200, body
    assert body["rewrapped"]["pki"] >= 2 and "pki" not in body["unreadable"]  # the CAs' keys (and the cursor key)
    cert = await issue(api, setup["role"], "after-rotation.example.com")
    assert cert["ca_id"] == setup["ca"]["id"]


async def _ca_tenant(pg_dsn: str, schema: str, ca_id: str) -> str:
    conn = await asyncpg.connect(pg_dsn)
    try:
        return str(await conn.fetchval(f'SELECT tenant_id FROM "{schema}".cas WHERE id = $1', ca_id))
    finally:
        await conn.close()


async def test_ca_keys_are_sealed_at_rest_and_never_logged(api: Api, platform: Platform, pg_dsn: str,
                                                           setup: dict[str, Any]) -> None:
    """The CA's key, unsealed here with the platform's KMS, is registered: no log line of the run may hold it."""
    schema = platform.values["schema_prefix"] + "pki"
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow(f'SELECT kek_id, wrapped_key, nonce, ciphertext FROM "{schema}".cas WHERE id = $1',
                                  setup["ca"]["id"])
    finally:
        await conn.close()
    ring = platform.runtimes["pki"].keyring
    assert ring is not None
    tenant_keys = ring.tenant(await _ca_tenant(pg_dsn, schema, setup["ca"]["id"]))  # the CA's tenant's KEK
    der = unseal(tenant_keys, Sealed(*row), ca_aad(setup["ca"]["id"]))
    key = keys.from_der(der)
    pem = keys.to_pem(key)
    for line in pem.splitlines()[1:-1]:
        remember_secret(line)
    cert = x509.load_pem_x509_certificate(setup["ca"]["certificate"].encode())
    assert cert.public_key() == key.public_key()
    with pytest.raises(EncryptionError):  # bound to its CA: the same row under another id does not open
        unseal(tenant_keys, Sealed(*row), ca_aad("ca_other"))
    with pytest.raises(EncryptionError):  # nor under the service's own keys, nor the root keyring
        unseal(ring, Sealed(*row), ca_aad(setup["ca"]["id"]))
    with pytest.raises(EncryptionError):
        unseal(platform.kms, Sealed(*row), ca_aad(setup["ca"]["id"]))
    leaf = await issue(api, setup["role"], "logged.example.com")  # work that logs, with the key in use
    await api.request("POST", f"/v1/pki/certificates/{leaf['serial']}:revoke", json={"reason": "superseded"})
    await api.request("POST", f"/v1/pki/roles/{setup['role']}:sign", json={"csr": pem})


async def test_crls_are_re_signed_before_they_lapse_and_pki_calls_have_their_own_rate_limit(
        tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession) -> None:
    """CRLs of 6 s are re-signed when 2 s are left; ``pki=5/m`` limits PKI calls, not the public CRL's."""
    async with own_platform("embedded", tmp_path, pg_dsn, pki_crl_lifetime="6s",
                            rate_limits="read=100000/s,write=100000/s,pki=5/m,auth=100000/s") as platform:
        api = await initialised(platform, http)
        ca = await make_ca(api)
        role = await make_role(api, ca["id"])
        await issue(api, role)
        await issue(api, role)

        async def crl() -> x509.CertificateRevocationList:
            async with http.get(f"{platform.url}/v1/pki/cas/{ca['id']}/crl") as resp:
                assert resp.status == 200
                return x509.load_der_x509_crl(await resp.read())

        first = await crl()
        number = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        deadline = asyncio.get_running_loop().time() + 15
        while (current := await crl()).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number:
            assert asyncio.get_running_loop().time() < deadline, "the CRL was not re-signed"
            await asyncio.sleep(0.3)
        assert current.next_update_utc > first.next_update_utc
        assert current.last_update_utc < current.next_update_utc  # type: ignore[operator]

        status, _, headers = await api.request("GET", "/v1/pki/cas")  # the 5th PKI call in the minute
        assert status == 200 and headers["X-RateLimit-Remaining"] == "0"
        status, body, headers = await api.request("GET", "/v1/pki/cas")
        err = assert_envelope(status, body, headers, "rate_limited")
        assert err["details"]["category"] == "pki" and int(headers["Retry-After"]) >= 1
        assert (await api.request("GET", "/v1/secrets"))[0] == 200  # other categories unaffected
