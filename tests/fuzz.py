"""``make fuzz``: the whole API under schemathesis, as an operator who just started Coffer would run it.

Starts the platform in one process (embedded mode) on a fresh PostgreSQL
database, initialises it, and runs schemathesis against its OpenAPI
description as the root admin: every check but ``unsupported_method`` (the
contract answers an undeclared method with 400 ``invalid_request``: the
vocabulary has no 405), plus ``error_is_the_envelope``
(tests/e2e/schemathesis_hooks.py), with the stateful phase following the
links the description declares. Prints the number of cases, failures and the
time it took; exits non-zero on any failure or when fewer cases than asked
for were generated.

    python -m tests.fuzz [--max-examples 250] [--seed 7] [--min-cases 10000] [--workers 2]

Before schemathesis starts, ``seed`` makes a few of each resource the API
has (secrets, CAs, roles, certificates, CSRs, trust anchors, policies,
identities, bindings, access requests, rotation policies, webhooks with a delivery,
subscriptions, an export, engines with roles and leases, ACME accounts, DNS
providers and orders), and ``operations_config`` hands their ids to the
operations that take them, as schemathesis dictionaries drawn half the time
(the other half stays generated): an operation on ``/{id}`` otherwise only
ever meets 404 and never reaches its core logic. What an operation destroys
(``DELETE``, ``:purge``, ``:revoke``, ``:approve``, ``:deny``, ``:cancel``) draws from resources of
its own, so the reads keep theirs. The links of the description
(services/gateway/edge/openapi.py) chain the stateful phase the same way.

Targets of the run's own: webhooks point at 127.0.0.2, where nothing listens
(outbound calls are allowed there); the ``redis`` engine's Redis is started
there too (``own_redis``: never the machine's shared Redis, as the fuzzer may
rotate an engine's admin password); ACME talks to ``pebble`` and ``named``
(``own_acme``, tests/e2e/acme_peers.py, on 127.0.0.1, then allowed for
outbound calls). Each is skipped where its program is not installed, and the
operations needing it then only meet 404. Federation backends are not seeded
(they need another Coffer or AWS).

Three operations are left out, each for a reason that is not the fuzzer's to
find: ``PUT /v1/sys/maintenance`` (enabling it closes the API on purpose),
``POST /v1/sys/kms:rotate`` and ``POST /v1/auth/keys:rotate`` (slow by
design — every data key re-wrapped — and tested on their own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("COFFER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
#: ``get_v1_events`` answers a stream that ends with its token (an hour): each accepted case would hang there
#: (its refusals — filters, Last-Event-ID, scope, the stream limit — are tried in tests/e2e/test_events.py)
EXCLUDED = ("put_v1_sys_maintenance", "post_v1_sys_kms_rotate", "post_v1_auth_keys_rotate", "get_v1_events")
CONFIG = ROOT / "tests" / "schemathesis.toml"
#: where the seeded webhooks point: a loopback address no service of this machine listens on
WEBHOOK_HOST = "127.0.0.2"


def schemathesis_command(url: str, token: str, *, max_examples: int, seed: int,
                         phases: str = "examples,coverage,fuzzing,stateful", workers: str = "2",
                         config: Path = CONFIG) -> list[str]:
    """schemathesis against ``url``'s description as ``token``'s holder: every check but the 405 one, ours
    added by ``SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_hooks`` (see ``schemathesis_env``); ``config``:
    ``CONFIG``, or it with the seeded resources (``operations_config``)."""
    return [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
            str(config), "run", f"{url}/v1/openapi.json",
            "--header", f"Authorization: Bearer {token}", "--max-examples", str(max_examples),
            "--seed", str(seed), "--phases", phases, "--workers", workers,
            "--exclude-checks", "unsupported_method", "--continue-on-failure", "--no-color",
            "--suppress-health-check", "all", "--request-timeout", "30",
            *(a for op in EXCLUDED for a in ("--exclude-operation-id", op))]


def schemathesis_env() -> dict[str, str]:
    return {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks", "PYTHONPATH": str(ROOT)}


def cases_of(output: str) -> int:
    found = re.search(r"(\d+) generated", output)
    return int(found[1]) if found else 0


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise SystemExit(f"fuzz: the platform exited ({proc.returncode})")
        if await asyncio.to_thread(_healthy, url):
            return
        await asyncio.sleep(0.3)
    raise SystemExit("fuzz: the platform did not become healthy")


def post_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return dict(json.loads(r.read()))


def call(url: str, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    """One API call as ``token``'s holder: its JSON answer (``None`` for 204); an error answer raises."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, method=method, data=data,
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            raw = r.read()
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"fuzz: seeding failed: {method} {path} answered {exc.code} {exc.read()[:500]!r}") from None
    return json.loads(raw) if raw else None


def _csr(common_name: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def _ssh_recipient() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def seed(url: str, token: str, redis: tuple[str, int, str] | None = None, acme: Any = None) -> dict[str, list[str]]:
    """A few of each resource, made as the root admin: ``{dictionary name: [id, …]}``. ``*_keep`` are for
    operations that read or change, ``*_victim`` for those that destroy. ``redis`` (host, port, password
    of a Redis of this run's own): an engine on it, its roles and leases; ``acme`` (``acme_peers``' Peers):
    ACME accounts, DNS providers and an order that ends with a certificate."""
    def api(method: str, path: str, body: dict[str, Any] | None = None, as_: str = token) -> Any:
        return call(url, method, path, as_, body)

    out: dict[str, list[str]] = {}
    for kind in ("keep", "victim", "deleted", "purged"):  # read; deleted; restored; purged
        out[f"secret_{kind}"] = [f"fuzz-{kind}-{i}" for i in range(6)]
        for path in out[f"secret_{kind}"]:
            api("PUT", f"/v1/secrets/{path}", {"value": secrets.token_hex(8)})
            api("PUT", f"/v1/secrets/{path}", {"value": secrets.token_hex(8)})
    for path in out["secret_deleted"]:  # something to restore
        api("DELETE", f"/v1/secrets/{path}")

    def ca(name: str) -> dict[str, Any]:
        return dict(api("POST", "/v1/pki/cas", {"name": name, "common_name": f"Fuzz {name}", "ttl": "8760h"}))

    root = ca("fuzz-keep")
    out["ca_keep"], out["ca_pem"] = [root["id"]], [root["certificate"]]
    out["ca_victim"] = [ca(f"fuzz-victim-{i}")["id"] for i in range(4)]
    role = {"ca_id": root["id"], "allowed_domains": ["example.com"], "allow_subdomains": True,
            "allow_bare_domains": True, "allow_ip_sans": True, "ttl": "24h", "max_ttl": "720h"}
    out["role_keep"] = ["fuzz-keep"]
    out["role_victim"] = [f"fuzz-victim-{i}" for i in range(4)]
    for name in (*out["role_keep"], *out["role_victim"]):
        api("PUT", f"/v1/pki/roles/{name}", role)
    out["serial_keep"] = [api("POST", "/v1/pki/roles/fuzz-keep:issue", {"common_name": f"k{i}.example.com"})["serial"]
                          for i in range(2)]
    out["serial_victim"] = [api("POST", "/v1/pki/roles/fuzz-keep:issue",
                                {"common_name": f"v{i}.example.com"})["serial"] for i in range(6)]
    out["issue_cn"] = [f"fuzz{i}.example.com" for i in range(3)]
    out["csr_pem"] = [_csr(f"csr{i}.example.com") for i in range(3)]
    # CSRs for :approve and :reject come from another identity: the submitter may not approve its own
    submitter = api("POST", "/v1/identities", {"name": "fuzz-submitter", "kind": "service", "allowed_scopes": ["pki"]})
    api("POST", "/v1/policies", {"name": "fuzz-submit", "rules": [
        {"effect": "allow", "paths": ["pki/roles/*"], "capabilities": ["read", "write"]}]})
    api("POST", "/v1/bindings", {"policy": "fuzz-submit", "identity_id": submitter["id"]})
    submitted = call(url, "POST", "/v1/auth/token", "", {"client_id": submitter["client_id"],
                                                         "client_secret": submitter["client_secret"]})
    csrs = [api("POST", "/v1/pki/csrs", {"csr": _csr(f"s{i}.example.com"), "role": "fuzz-keep"},
                as_=submitted["access_token"])["id"] for i in range(10)]
    out["csr_keep"], out["csr_victim"] = csrs[:2], csrs[2:]
    out["anchor_keep"] = [api("POST", "/v1/pki/trust-anchors", {"name": "fuzz-keep",
                                                               "certificate": root["certificate"]})["id"]]
    out["anchor_victim"] = [api("POST", "/v1/pki/trust-anchors", {"name": f"fuzz-victim-{i}",
                                                                 "certificate": root["certificate"]})["id"]
                            for i in range(4)]
    rules = [{"effect": "allow", "paths": ["secrets/fuzz-*"], "capabilities": ["read"]}]
    out["policy_keep"] = ["fuzz-keep"]
    out["policy_victim"] = [f"fuzz-victim-{i}" for i in range(4)]
    for name in (*out["policy_keep"], *out["policy_victim"]):
        api("POST", "/v1/policies", {"name": name, "rules": rules})
    keep = [api("POST", "/v1/identities", {"name": f"fuzz-keep-{kind}", "kind": kind,
                                           "allowed_scopes": ["secrets:read"],
                                           **({"password": secrets.token_urlsafe(16)} if kind == "user" else {})})
            for kind in ("user", "service")]
    out["identity_keep"] = [identity["id"] for identity in keep]
    out["identity_victim"] = [api("POST", "/v1/identities", {"name": f"fuzz-victim-{i}", "kind": "service",
                                                             "allowed_scopes": ["secrets:read"]})["id"]
                              for i in range(4)]
    # a factor to reset: enrolled by the identity itself (only it sees the otpauth:// URI)
    own = call(url, "POST", "/v1/auth/token", "", {"client_id": keep[1]["client_id"],
                                                   "client_secret": keep[1]["client_secret"]})
    api("POST", f"/v1/identities/{keep[1]['id']}/mfa/totp", as_=own["access_token"])
    bindings = [api("POST", "/v1/bindings", {"policy": "fuzz-keep", "identity_id": identity})["id"]
                for identity in (*out["identity_keep"], *out["identity_victim"])]
    out["binding_keep"], out["binding_victim"] = bindings[:2], bindings[2:]
    # access requests, made by another identity (nobody decides on their own): one pending per policy, so a
    # requestable policy each; the first is read, the others decided on (one of them granted, to revoke)
    out["policy_requestable"] = [f"fuzz-jit-{i}" for i in range(5)]
    for policy in out["policy_requestable"]:
        api("POST", "/v1/policies", {"name": policy, "rules": rules, "request": {"max_duration": "8h"}})
    asker = api("POST", "/v1/identities", {"name": "fuzz-requester", "kind": "service",
                                           "allowed_scopes": ["secrets:read"]})
    asking = call(url, "POST", "/v1/auth/token", "", {"client_id": asker["client_id"],
                                                      "client_secret": asker["client_secret"]})["access_token"]
    requests = [api("POST", "/v1/access-requests", {"policy": policy, "duration": "1h", "reason": "fuzz"},
                    as_=asking)["id"] for policy in out["policy_requestable"]]
    api("POST", f"/v1/access-requests/{requests[1]}:approve", {})
    out["access_keep"], out["access_victim"] = requests[:1], requests[1:]
    hook = f"https://{WEBHOOK_HOST}:{free_port()}/hook"
    out["webhook_url"] = [hook, f"https://{WEBHOOK_HOST}:{free_port()}/other"]
    out["webhook_keep"] = [api("POST", "/v1/webhooks", {"url": hook})["id"]]
    out["webhook_victim"] = [api("POST", "/v1/webhooks", {"url": hook})["id"] for _ in range(4)]
    out["delivery"] = [api("POST", f"/v1/webhooks/{out['webhook_keep'][0]}:ping")["delivery_id"] for _ in range(3)]
    subscriptions = [api("POST", "/v1/subscriptions", {"webhook_id": out["webhook_keep"][0],
                                                       "event_types": ["secret.updated"]})["id"] for _ in range(5)]
    out["subscription_keep"], out["subscription_victim"] = subscriptions[:1], subscriptions[1:]
    out["ttl_long"] = ["24h", "48h"]
    rotation = {"path_pattern": "fuzz-keep-*", "interval": "720h", "generator": {"type": "password"}}
    out["rotation_keep"] = ["fuzz-keep"]
    out["rotation_victim"] = [f"fuzz-victim-{i}" for i in range(4)]
    for name in (*out["rotation_keep"], *out["rotation_victim"]):
        api("POST", "/v1/rotation-policies", {"name": name, **rotation})
    if redis is not None:
        host, port, password = redis
        config = {"host": host, "port": port, "username": "default", "password": password}
        out["engine_keep"] = ["fuzz-keep"]
        out["engine_victim"] = [f"fuzz-victim-{i}" for i in range(3)]
        for name in (*out["engine_keep"], *out["engine_victim"]):
            api("POST", "/v1/engines", {"name": name, "type": "redis", "config": config})
        out["engine_role_keep"] = ["fuzz-keep"]
        out["engine_role_victim"] = [f"fuzz-victim-{i}" for i in range(4)]
        for name in (*out["engine_role_keep"], *out["engine_role_victim"]):
            api("PUT", f"/v1/engines/fuzz-keep/roles/{name}", {"acl_rules": ["~fuzz:*", "+get", "+set"],
                                                                "default_ttl": "1h", "max_ttl": "24h"})
        leases = [api("POST", "/v1/engines/fuzz-keep/roles/fuzz-keep:credentials", {})["lease_id"]
                  for _ in range(8)]
        out["lease_keep"], out["lease_victim"] = leases[:3], leases[3:]
        out["acl_rule"] = ["~fuzz:*", "+get", "+set", "-@all", "%R~cache:*"]
        out["ttl_short"] = ["1h", "30m"]
    if acme is not None:
        account = {"directory_url": acme.directory_url, "email": "ops@example.com", "ca_bundle": acme.tls_root}
        out["acme_account_keep"] = [api("POST", "/v1/pki/acme/accounts", account)["id"]]
        out["acme_account_victim"] = [api("POST", "/v1/pki/acme/accounts", account)["id"] for _ in range(3)]
        out["acme_dns_keep"] = [api("POST", "/v1/pki/acme/dns-providers", acme.provider("fuzz-keep"))["id"]]
        out["acme_dns_victim"] = [api("POST", "/v1/pki/acme/dns-providers", acme.provider(f"fuzz-victim-{i}"))["id"]
                                  for i in range(3)]
        orders = [api("POST", "/v1/pki/acme/orders", {
            "account_id": out["acme_account_keep"][0], "dns_provider_id": out["acme_dns_keep"][0],
            "domains": [f"fuzz{i}.acme.test"]})["id"] for i in range(4)]
        deadline = time.monotonic() + 90
        while api("GET", f"/v1/pki/acme/orders/{orders[0]}")["status"] not in ("valid", "invalid"):
            if time.monotonic() > deadline:
                raise SystemExit("fuzz: seeding failed: the ACME order did not settle in 90 s")
            time.sleep(0.3)
        out["acme_order_keep"], out["acme_order_victim"] = orders[:1], orders[1:]
    out["recipient"] = [_ssh_recipient()]
    out["export_keep"] = [api("POST", "/v1/exports", {"prefix": "fuzz-keep-0", "format": "json",
                                                      "recipient": out["recipient"][0]})["id"]]
    return out


#: which seeded resources each operation takes: ``(method, path, {parameter: dictionary})``, a parameter
#: as schemathesis names it (``path.id``, ``body.ca_id``), a dictionary by name (drawn half the time) or as
#: ``(name, probability)``
USES: tuple[tuple[str, str, dict[str, str | tuple[str, float]]], ...] = (
    *(("GET", f"/v1/secrets/{{path}}{tail}", {"path.path": "secret_keep"}) for tail in ("", ":versions")),
    ("POST", "/v1/secrets/{path}:rotate", {"path.path": "secret_keep"}),
    ("DELETE", "/v1/secrets/{path}", {"path.path": "secret_victim"}),
    ("POST", "/v1/secrets/{path}:restore", {"path.path": "secret_deleted"}),
    ("POST", "/v1/secrets/{path}:purge", {"path.path": "secret_purged"}),
    # what a create needs that a schema can't say: a duration a CA may have, a parent that exists, an address
    # a webhook may call, a CA certificate, a recipient's key
    ("POST", "/v1/pki/cas", {"body.ttl": "ttl_long", "body.parent_id": "ca_keep"}),
    *((method, path, {"body.url": "webhook_url"}) for method, path in (("POST", "/v1/webhooks"),
                                                                        ("PATCH", "/v1/webhooks/{id}"))),
    ("POST", "/v1/pki/trust-anchors", {"body.certificate": "ca_pem"}),
    ("POST", "/v1/exports", {"body.recipient": "recipient", "body.prefix": "secret_keep"}),
    *(("GET", f"/v1/pki/cas/{{id}}{tail}", {"path.id": "ca_keep"}) for tail in ("", "/chain", "/crl")),
    ("DELETE", "/v1/pki/cas/{id}", {"path.id": "ca_victim"}),
    ("PUT", "/v1/pki/roles/{name}", {"body.ca_id": "ca_keep"}),
    ("GET", "/v1/pki/roles/{name}", {"path.name": "role_keep"}),
    ("DELETE", "/v1/pki/roles/{name}", {"path.name": "role_victim"}),
    ("POST", "/v1/pki/roles/{name}:issue", {"path.name": "role_keep", "body.common_name": "issue_cn"}),
    ("POST", "/v1/pki/roles/{name}:sign", {"path.name": "role_keep", "body.csr": "csr_pem"}),
    ("POST", "/v1/pki/csrs", {"body.role": "role_keep", "body.csr": "csr_pem"}),
    ("GET", "/v1/pki/csrs/{id}", {"path.id": "csr_keep"}),
    *(("POST", f"/v1/pki/csrs/{{id}}:{verb}", {"path.id": "csr_victim"}) for verb in ("approve", "reject")),
    ("GET", "/v1/pki/certificates/{serial}", {"path.serial": "serial_keep"}),
    ("POST", "/v1/pki/certificates/{serial}:revoke", {"path.serial": "serial_victim"}),
    ("GET", "/v1/pki/trust-anchors/{id}", {"path.id": "anchor_keep"}),
    ("DELETE", "/v1/pki/trust-anchors/{id}", {"path.id": "anchor_victim"}),
    *((method, "/v1/policies/{name}", {"path.name": "policy_keep"}) for method in ("GET", "PUT")),
    ("DELETE", "/v1/policies/{name}", {"path.name": "policy_victim"}),
    *((method, "/v1/identities/{id}", {"path.id": "identity_keep"}) for method in ("GET", "PATCH")),
    ("DELETE", "/v1/identities/{id}", {"path.id": "identity_victim"}),
    *((method, "/v1/identities/{id}/mfa/totp", {"path.id": "identity_keep"}) for method in ("POST", "DELETE")),
    ("POST", "/v1/bindings", {"body.identity_id": "identity_keep", "body.policy": "policy_keep"}),
    ("POST", "/v1/access-requests", {"body.policy": "policy_requestable"}),
    ("GET", "/v1/access-requests/{id}", {"path.id": "access_keep"}),
    *(("POST", f"/v1/access-requests/{{id}}:{verb}", {"path.id": "access_victim"})
      for verb in ("approve", "deny", "cancel", "revoke")),
    ("GET", "/v1/bindings/{id}", {"path.id": "binding_keep"}),
    ("DELETE", "/v1/bindings/{id}", {"path.id": "binding_victim"}),
    *((method, f"/v1/webhooks/{{id}}{tail}", {"path.id": "webhook_keep"})
      for method, tail in (("GET", ""), ("PATCH", ""), ("POST", ":ping"), ("POST", ":rotate-secret"),
                           ("GET", "/deliveries"))),
    ("DELETE", "/v1/webhooks/{id}", {"path.id": "webhook_victim"}),
    *((method, f"/v1/webhooks/{{id}}/deliveries/{{did}}{tail}", {"path.id": "webhook_keep", "path.did": "delivery"})
      for method, tail in (("GET", ""), ("POST", ":retry"))),
    ("POST", "/v1/subscriptions", {"body.webhook_id": "webhook_keep"}),
    ("GET", "/v1/subscriptions/{id}", {"path.id": "subscription_keep"}),
    ("DELETE", "/v1/subscriptions/{id}", {"path.id": "subscription_victim"}),
    *(("GET", f"/v1/exports/{{id}}{tail}", {"path.id": "export_keep"}) for tail in ("", "/bundle")),
    *((method, "/v1/rotation-policies/{name}", {"path.name": "rotation_keep"}) for method in ("GET", "PUT")),
    ("DELETE", "/v1/rotation-policies/{name}", {"path.name": "rotation_victim"}),
    *((method, f"/v1/engines/{{name}}{tail}", {"path.name": "engine_keep"})
      for method, tail in (("GET", ""), ("PATCH", ""), ("GET", "/roles"))),
    ("DELETE", "/v1/engines/{name}", {"path.name": "engine_victim"}),
    # a redis role: its engine and rules drawn nearly always, or generated bodies only ever meet 404 or 400
    ("PUT", "/v1/engines/{name}/roles/{role}", {
        "path.name": ("engine_keep", 0.9), "body.acl_rules[*]": ("acl_rule", 0.9),
        "body.default_ttl": ("ttl_short", 0.9), "body.max_ttl": ("ttl_long", 0.9)}),
    *((method, f"/v1/engines/{{name}}/roles/{{role}}{tail}", {"path.name": "engine_keep",
                                                              "path.role": "engine_role_keep"})
      for method, tail in (("GET", ""), ("POST", ":credentials"))),
    ("DELETE", "/v1/engines/{name}/roles/{role}", {"path.name": "engine_keep", "path.role": "engine_role_victim"}),
    *((method, f"/v1/leases/{{id}}{tail}", {"path.id": "lease_keep"})
      for method, tail in (("GET", ""), ("POST", ":renew"))),
    ("POST", "/v1/leases/{id}:revoke", {"path.id": "lease_victim"}),
    ("POST", "/v1/leases:revoke-prefix", {"body.engine": "engine_victim"}),
    *(("GET", f"/v1/pki/acme/{kind}/{{id}}{tail}", {"path.id": f"acme_{name}_keep"})
      for kind, name, tail in (("accounts", "account", ""), ("dns-providers", "dns", ""), ("orders", "order", ""),
                               ("orders", "order", "/private-key"))),
    *(("DELETE", f"/v1/pki/acme/{kind}/{{id}}", {"path.id": f"acme_{name}_victim"})
      for kind, name in (("accounts", "account"), ("dns-providers", "dns"), ("orders", "order"))),
)


@contextlib.asynccontextmanager
async def own_redis() -> AsyncIterator[tuple[str, int, str] | None]:
    """A Redis of this run's own on ``WEBHOOK_HOST`` (nothing else of this machine listens there), for the
    seeded ``redis`` engine: (host, port, password), or ``None`` without ``redis-server``. Never the
    machine's shared Redis: the fuzzer may rotate an engine's admin password."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port, password = free_port(), secrets.token_urlsafe(16)
    proc = await asyncio.create_subprocess_exec(
        binary, "--bind", WEBHOOK_HOST, "--port", str(port), "--requirepass", password, "--save", "",
        "--appendonly", "no", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                _, writer = await asyncio.open_connection(WEBHOOK_HOST, port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield WEBHOOK_HOST, port, password
    finally:
        proc.terminate()
        await proc.wait()


@contextlib.asynccontextmanager
async def own_acme(folder: Path) -> AsyncIterator[Any]:
    """``named`` and ``pebble`` (tests/e2e/acme_peers.py) for the run, or ``None`` where they aren't installed."""
    from tests.e2e.acme_peers import NAMED, PEBBLE, acme_peers

    if not (shutil.which(NAMED) and shutil.which(PEBBLE)):
        yield None
        return
    async with acme_peers(folder) as peers:
        yield peers


def _toml(value: Any) -> str:
    return json.dumps(value)  # a JSON string or number is a TOML one


def operations_config(seeded: dict[str, list[str]], probability: float = 0.5) -> str:
    """``CONFIG``, and the seeded resources as dictionaries each operation in ``USES`` draws from."""
    lines = [CONFIG.read_text(), "", "# -- resources tests/fuzz.py made before the run (generated) --"]
    for name, values in sorted(seeded.items()):
        lines += [f"[dictionaries.{name}]", f"values = [{', '.join(_toml(v) for v in values)}]", ""]
    for method, path, parameters in USES:
        drawn = {p: d if isinstance(d, tuple) else (d, probability) for p, d in parameters.items()}
        if any(not seeded.get(dictionary) for dictionary, _ in drawn.values()):
            continue
        bindings = ", ".join(f"{_toml(p)} = {{ dictionary = {_toml(d)}, probability = {chance} }}"
                             for p, (d, chance) in drawn.items())
        # one filter, the operation's name: ``include-method`` beside ``include-path`` would be either
        lines += ["[[operations]]", f"include-name = {_toml(f'{method} {path}')}", f"parameters = {{ {bindings} }}",
                  ""]
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=250)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-cases", type=int, default=10_000)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    args = parser.parse_args()

    db = f"coffer_fuzz_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="coffer-fuzz-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update({"PYTHONPATH": str(ROOT), "COFFER_HTTP_PORT": str(port), "COFFER_DATA_DIR": str(data),
                "COFFER_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{db}", "COFFER_LOG_LEVEL": "error",
                # the fuzzer is one client sending thousands of requests a minute
                "COFFER_RATE_LIMITS": "read=1000000/s,write=1000000/s,pki=1000000/s,auth=1000000/s",
                # the seeded webhooks' address (nothing listens there): deliveries are made, and fail
                "COFFER_OUTBOUND_ALLOWED_CIDRS": f"{WEBHOOK_HOST}/32",
                # the seeded engine's Redis, this run's own (``own_redis``)
                "COFFER_ENGINE_ALLOWED_CIDRS": f"{WEBHOOK_HOST}/32"})
    exits = contextlib.AsyncExitStack()
    redis = await exits.enter_async_context(own_redis())
    (data / "acme").mkdir()
    acme = await exits.enter_async_context(own_acme(data / "acme"))
    if acme is not None:  # pebble and named listen on 127.0.0.1: the run's ACME client may call them there
        env.update({"COFFER_OUTBOUND_ALLOWED_CIDRS": f"{WEBHOOK_HOST}/32,127.0.0.1/32",
                    "COFFER_ACME_POLL_INTERVAL": "0.3", "COFFER_ACME_TIMEOUT": "5",
                    "COFFER_ACME_PROPAGATION_TIMEOUT": "10"})
    platform = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.embedded", cwd=ROOT, env=env,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
    started = time.monotonic()
    try:
        await wait_healthy(url, platform)
        init = await asyncio.to_thread(post_json, f"{url}/v1/sys/init")
        seeded = await asyncio.to_thread(seed, url, str(init["token"]), redis, acme)
        config = data / "schemathesis.toml"
        config.write_text(operations_config(seeded))
        print(f"fuzz: seeded {sum(len(v) for v in seeded.values())} resources for {len(USES)} operations",
              flush=True)
        print(f"fuzz: platform on {url}; running schemathesis (seed {args.seed}, {args.max_examples} examples per "
              f"operation, phases {args.phases}) ...", flush=True)
        command = schemathesis_command(url, str(init["token"]), max_examples=args.max_examples, seed=args.seed,
                                       phases=args.phases, workers=args.workers, config=config)
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=schemathesis_env())
        assert proc.stdout is not None
        lines: list[str] = []
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            print(line, flush=True)
        await proc.wait()
    finally:
        if platform.returncode is None:
            platform.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(platform.wait(), 15)
        except TimeoutError:
            platform.kill()
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(data, ignore_errors=True)
        await exits.aclose()
    text = "\n".join(lines)
    cases = cases_of(text)
    failures = re.search(r"(\d+) failures?\b", text.split("SUMMARY")[-1]) if "SUMMARY" in text else None
    took = time.monotonic() - started
    print(f"\nfuzz: {cases} cases, {failures[1] if failures else 0} failures, schemathesis exit {proc.returncode}, "
          f"{took:.0f} s in all")
    if proc.returncode != 0:
        return 1
    if cases < args.min_cases:
        print(f"fuzz: fewer cases than the {args.min_cases} asked for")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
