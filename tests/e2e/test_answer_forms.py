"""Every timestamp of every answer is RFC 3339 in UTC with ``Z`` (docs/api.md, Values; issue #28).

One of each resource is made through the gateway, and each answer about it is walked: every value under a key
that names a moment (``…_at``, ``not_before``, ``not_after``, ``…_until``, ``at``, …), and every string anywhere
that starts like an ISO 8601 date-time, must read ``2026-11-25T10:00:00Z`` (fractions of a second allowed).
The gateway's own answers (identities, tenants, policies, bindings, audit entries) and the services' answers
(secrets, exports, webhooks, PKI, leases) come out of different serializers: both are covered.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from typing import Any

import pyrage
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import identity, name, totp_code
from tests.e2e.pki_helpers import csr_pem, issue, make_ca, make_role
from tests.e2e.receiver import Receiver
from tests.e2e.test_secrets import put, unique

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
#: a string that starts like a date-time, whatever its zone: it must be written the one way too
LOOKS_LIKE_TIME = re.compile(r"^\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d")
TIME_KEYS = {"at", "not_before", "not_after", "next_update"}
TIME_SUFFIXES = ("_at", "_until", "_after", "_before")


def _is_time_key(key: str) -> bool:
    return key in TIME_KEYS or key.endswith(TIME_SUFFIXES)


def moments(answer: Any, where: str = "") -> list[tuple[str, Any]]:
    """(where, value) of every value in ``answer`` that is, or should be, a moment (nulls left out)."""
    found: list[tuple[str, Any]] = []
    stack: list[tuple[str, Any]] = [(where, answer)]
    while stack:
        place, item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                here = f"{place}.{key}"
                if _is_time_key(str(key)) and value is not None and not isinstance(value, (dict, list)):
                    found.append((here, value))
                else:
                    stack.append((here, value))
        elif isinstance(item, list):
            stack.extend((f"{place}[{i}]", value) for i, value in enumerate(item))
        elif isinstance(item, str) and LOOKS_LIKE_TIME.match(item):
            found.append((place, item))
    return found


class Answers:
    """Answers collected by resource; checked at the end, all at once, so one run names every bad form."""

    def __init__(self) -> None:
        self.by_resource: dict[str, list[Any]] = {}

    def add(self, resource: str, status: int, body: Any, expected: int = 200) -> Any:
        assert status == expected, (resource, status, body)
        self.by_resource.setdefault(resource, []).append(body)
        return body

    async def get(self, api: Api, resource: str, method: str, path: str, expected: int = 200,
                  **kwargs: Any) -> Any:
        status, body, _ = await api.request(method, path, **kwargs)
        return self.add(resource, status, body, expected)


def _ca_certificate() -> str:
    """A self-signed CA certificate made here (a trust anchor from elsewhere)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Elsewhere Root " + secrets.token_hex(3))])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def _iam(api: Api, seen: Answers) -> None:
    svc = await identity(api, ["secrets:read"])
    seen.add("identity", 201, svc, 201)
    await seen.get(api, "identity", "GET", f"/v1/identities/{svc['id']}")
    await seen.get(api, "identity", "GET", "/v1/identities?limit=5")
    policy = name("p")
    await seen.get(api, "policy", "POST", "/v1/policies", 201, json={
        "name": policy, "rules": [{"effect": "allow", "paths": ["secrets/x"], "capabilities": ["read"]}]})
    await seen.get(api, "policy", "GET", f"/v1/policies/{policy}")
    binding = await seen.get(api, "binding", "POST", "/v1/bindings", 201,
                             json={"policy": policy, "identity_id": svc["id"]})
    await seen.get(api, "binding", "GET", f"/v1/bindings/{binding['id']}")
    tenant = await seen.get(api, "tenant", "POST", "/v1/tenants", 201, json={"name": name("t"), "kind": "standard"})
    await seen.get(api, "tenant", "GET", f"/v1/tenants/{tenant['id']}")
    await seen.get(api, "tenant", "PATCH", f"/v1/tenants/{tenant['id']}", json={"require_mfa": False})

    # whoami of a token that stepped up: expires_at and mfa_at
    username, password = name("user"), remember_secret("correct horse battery staple 28")
    status, user, _ = await api.request("POST", "/v1/identities", json={
        "name": username, "kind": "user", "allowed_scopes": ["secrets:read"], "password": password})
    assert status == 201, user
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"username": username, "password": password})
    assert status == 200, tok
    own = remember_secret(tok["access_token"])
    status, enrol, _ = await api.request("POST", f"/v1/identities/{user['id']}/mfa/totp", token=own)
    assert status == 201, enrol
    status, stepped, _ = await api.request("POST", "/v1/auth/mfa", token=own,
                                           json={"totp_code": totp_code(remember_secret(enrol["otpauth_uri"]))})
    assert status == 200, stepped
    await seen.get(api, "whoami", "GET", "/v1/auth/whoami", token=remember_secret(stepped["access_token"]))
    await seen.get(api, "audit event", "GET", "/v1/audit/events?limit=20")


async def _secrets(api: Api, seen: Answers) -> None:
    base = unique("forms")
    status, written, _ = await put(api, f"{base}/one", "v1", ttl="1h")
    seen.add("secret", status, written, 201)
    status, written, _ = await put(api, f"{base}/one", "v2", expires_at="2099-01-01T00:00:00+02:00")
    seen.add("secret", status, written)
    await seen.get(api, "secret", "GET", f"/v1/secrets/{base}/one")
    await seen.get(api, "secret version", "GET", f"/v1/secrets/{base}/one?version=1")
    await seen.get(api, "secret version", "GET", f"/v1/secrets/{base}/one:versions")
    await seen.get(api, "secret", "GET", f"/v1/secrets?prefix={base}/")
    assert (await api.request("DELETE", f"/v1/secrets/{base}/one"))[0] == 204
    await seen.get(api, "secret", "POST", f"/v1/secrets/{base}/one:restore")

    sp = await seen.get(api, "secret policy", "POST", "/v1/secret-policies", 201,
                        json={"name": name("sp"), "path_pattern": f"{base}/policed/*"})
    await seen.get(api, "secret policy", "GET", f"/v1/secret-policies/{sp['name']}")
    rp = await seen.get(api, "rotation policy", "POST", "/v1/rotation-policies", 201, json={
        "name": name("rp"), "path_pattern": f"{base}/rotated/*", "interval": "30d",
        "generator": {"type": "password", "length": 24}})
    await seen.get(api, "rotation policy", "GET", f"/v1/rotation-policies/{rp['name']}")
    assert (await put(api, f"{base}/rotated/db", "first"))[0] == 201
    await seen.get(api, "secret", "POST", f"/v1/secrets/{base}/rotated/db:rotate")

    recipient = str(pyrage.x25519.Identity.generate().to_public())
    export = await seen.get(api, "export", "POST", "/v1/exports", 202,
                            json={"prefix": f"{base}/", "format": "json", "recipient": recipient})
    await seen.get(api, "export", "GET", f"/v1/exports/{export['id']}")


async def _webhooks(api: Api, seen: Answers) -> None:
    receiver = await Receiver().start()
    try:
        hook = await seen.get(api, "webhook", "POST", "/v1/webhooks", 201, json={"url": receiver.url})
        remember_secret(hook["secret"])
        await seen.get(api, "webhook", "GET", f"/v1/webhooks/{hook['id']}")
        rotated = await seen.get(api, "webhook", "POST", f"/v1/webhooks/{hook['id']}:rotate-secret")
        remember_secret(rotated["secret"])
        await seen.get(api, "subscription", "POST", "/v1/subscriptions", 201,
                       json={"webhook_id": hook["id"], "event_types": ["secret.updated"]})
        ping = await seen.get(api, "delivery", "POST", f"/v1/webhooks/{hook['id']}:ping", 202)
        await seen.get(api, "delivery", "GET", f"/v1/webhooks/{hook['id']}/deliveries")
        await seen.get(api, "delivery", "GET", f"/v1/webhooks/{hook['id']}/deliveries/{ping['delivery_id']}")
    finally:
        await receiver.stop()


async def _pki(api: Api, seen: Answers) -> None:
    ca = seen.add("CA", 201, await make_ca(api), 201)
    await seen.get(api, "CA", "GET", f"/v1/pki/cas/{ca['id']}")
    role = await make_role(api, ca["id"])
    await seen.get(api, "role", "GET", f"/v1/pki/roles/{role}")
    cert = seen.add("certificate", 201, await issue(api, role), 201)
    await seen.get(api, "certificate", "GET", f"/v1/pki/certificates/{cert['serial']}")
    await seen.get(api, "certificate", "POST", f"/v1/pki/certificates/{cert['serial']}:revoke", json={})
    await seen.get(api, "CSR", "POST", "/v1/pki/csrs", 201, json={"csr": csr_pem("csr.example.com"), "role": role})
    await seen.get(api, "trust anchor", "POST", "/v1/pki/trust-anchors", 201,
                   json={"name": name("ta"), "certificate": _ca_certificate()})


async def _leases(api: Api, seen: Answers, rds: dict[str, Any]) -> None:
    engine = await seen.get(api, "engine", "POST", "/v1/engines", 201,
                            json={"name": name("redis"), "type": "redis", "config": rds})
    await seen.get(api, "engine", "GET", f"/v1/engines/{engine['name']}")
    role = name("r")
    await seen.get(api, "engine role", "PUT", f"/v1/engines/{engine['name']}/roles/{role}", 201,
                   json={"acl_rules": ["~app:*", "+get"], "default_ttl": "5m"})
    lease = await seen.get(api, "lease", "POST", f"/v1/engines/{engine['name']}/roles/{role}:credentials", 201,
                           json={})
    remember_secret(lease["data"]["password"])
    await seen.get(api, "lease", "GET", f"/v1/leases/{lease['lease_id']}")
    await seen.get(api, "lease", "POST", f"/v1/leases/{lease['lease_id']}:renew", json={})
    assert (await api.request("POST", f"/v1/leases/{lease['lease_id']}:revoke"))[0] in (202, 204)


async def test_every_timestamp_of_every_resource_is_rfc3339_utc_with_z(api: Api, rds: dict[str, Any]) -> None:
    seen = Answers()
    await _iam(api, seen)
    await _secrets(api, seen)
    await _webhooks(api, seen)
    await _pki(api, seen)
    await _leases(api, seen, rds)

    bad, checked = [], set()
    for resource, answers in seen.by_resource.items():
        for answer in answers:
            for where, value in moments(answer):
                checked.add(resource)
                if not (isinstance(value, str) and RFC3339_UTC.match(value)):
                    bad.append(f"{resource}{where} = {value!r}")
    assert not bad, "timestamps not written RFC 3339 UTC with Z:\n" + "\n".join(bad)
    # every resource's answers held a moment, so none passed by holding nothing to check
    assert checked == set(seen.by_resource), sorted(set(seen.by_resource) - checked)
