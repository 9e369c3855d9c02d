"""The PKI through the gateway (api.md §6), judged by real relying parties: ``openssl verify``,
``openssl ocsp``, Python's ``ssl`` in a TLS handshake, CRLs parsed with ``cryptography``.

Every test runs on the in-process bus and on RabbitMQ, each platform with
``COFFER_PUBLIC_URL`` set to itself so issued certificates name its CRL and
OCSP URLs, and those are fetched like a relying party would: without a token.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

from services.pki import keys
from services.platform import Platform
from shared.context import RequestContext
from shared.contracts.events import Event
from tests.conftest import Api, free_port, initialised, own_platform
from tests.e2e.pki_helpers import csr_pem, issue, make_ca, make_role, run, tls_handshake, unique, write
from tests.integration.test_bus_contract import wait_until


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    port = free_port()
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn, http_port=port,
                            public_url=f"http://127.0.0.1:{port}") as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def hierarchy(api: Api) -> dict[str, Any]:
    """root (EC P-384) → intermediate (RSA-2048) → a server role and a client role."""
    root = await make_ca(api, key_type="ec-p384", common_name="Coffer Test Root", ttl="87600h")
    inter = await make_ca(api, key_type="rsa-2048", common_name="Coffer Test Issuing", ttl="43800h",
                          parent_id=root["id"])
    server = await make_role(api, inter["id"], ext_key_usage=["server_auth"])
    client = await make_role(api, inter["id"], key_type="ed25519", ext_key_usage=["client_auth"])
    return {"root": root, "inter": inter, "server": server, "client": client}


async def test_chains_verify_with_openssl_for_their_purpose(api: Api, hierarchy: dict[str, Any],
                                                            tmp_path: Path) -> None:
    root, inter = hierarchy["root"], hierarchy["inter"]
    assert inter["parent_id"] == root["id"] and root["parent_id"] is None
    assert inter["max_path_length"] is None and set(root) == {
        "id", "name", "common_name", "key_type", "parent_id", "serial", "not_before", "not_after",
        "max_path_length", "certificate", "created_at"}
    root_pem = write(tmp_path, "root.pem", root["certificate"])
    server = await issue(api, hierarchy["server"], "WWW.example.com", alt_names=["api.example.com"],
                         ip_sans=["127.0.0.1"])
    assert set(server) == {"serial", "certificate", "private_key", "chain", "ca_id", "expires_at"}
    assert server["chain"] == [inter["certificate"], root["certificate"]] and server["ca_id"] == inter["id"]
    assert server["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    leaf = x509.load_pem_x509_certificate(server["certificate"].encode())
    assert format(leaf.serial_number, "x") == server["serial"]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["www.example.com", "api.example.com"]
    untrusted = write(tmp_path, "inter.pem", inter["certificate"])
    code, out = await run("openssl", "verify", "-CAfile", root_pem, "-untrusted", untrusted, "-purpose", "sslserver",
                          write(tmp_path, "server.pem", server["certificate"]))
    assert code == 0 and out.strip().endswith(": OK"), out
    code, out = await run("openssl", "verify", "-CAfile", root_pem, "-untrusted", untrusted, "-purpose", "sslclient",
                          write(tmp_path, "server-as-client.pem", server["certificate"]))
    assert code != 0, "a server_auth certificate must not pass as a client certificate"

    client = await issue(api, hierarchy["client"], "agent.example.com")
    assert "BEGIN PRIVATE KEY" in client["private_key"]
    code, out = await run("openssl", "verify", "-CAfile", root_pem, "-untrusted", untrusted, "-purpose", "sslclient",
                          write(tmp_path, "client.pem", client["certificate"]))
    assert code == 0, out

    key = rsa.generate_private_key(65537, 2048)
    sign_role = await make_role(api, inter["id"], key_type="any")
    status, signed, _ = await api.request("POST", f"/v1/pki/roles/{sign_role}:sign",
                                          json={"csr": csr_pem("svc.example.com", ["svc.example.com"], key)})
    assert status == 201 and "private_key" not in signed, signed
    code, out = await run("openssl", "verify", "-CAfile", root_pem, "-untrusted", untrusted, "-purpose", "sslserver",
                          write(tmp_path, "signed.pem", signed["certificate"]))
    assert code == 0, out

    status, chain, headers = await api.request("GET", f"/v1/pki/cas/{inter['id']}/chain")
    assert status == 200 and headers["Content-Type"].startswith("application/x-pem-file")
    assert chain.decode() == inter["certificate"] + root["certificate"]
    status, bundle, _ = await api.request("GET", "/v1/pki/trust-bundle")
    assert status == 200 and root["certificate"] in bundle.decode() and inter["certificate"] not in bundle.decode()


async def test_tls_handshake_succeeds_and_fails_once_revoked_on_the_crl(api: Api, hierarchy: dict[str, Any],
                                                                      http: aiohttp.ClientSession,
                                                                      tmp_path: Path) -> None:
    cert = await issue(api, hierarchy["server"], "tls.example.com")
    chain = cert["certificate"] + "".join(cert["chain"][:-1])
    status, bundle, _ = await api.request("GET", "/v1/pki/trust-bundle")
    bundle_pem = bundle.decode()
    assert await tls_handshake(chain, cert["private_key"], bundle_pem, "tls.example.com", tmp_path) is None
    assert await tls_handshake(chain, cert["private_key"], bundle_pem, "evil.example.net", tmp_path) is not None

    leaf = x509.load_pem_x509_certificate(cert["certificate"].encode())
    crl_url = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value[0].full_name[0].value
    assert crl_url.endswith(f"/v1/pki/cas/{hierarchy['inter']['id']}/crl")
    async with http.get(crl_url, headers={"Accept": "application/x-pem-file"}) as resp:  # no token
        assert resp.status == 200 and resp.content_type == "application/x-pem-file"
        crl_before = await resp.text()
    assert await tls_handshake(chain, cert["private_key"], bundle_pem, "tls.example.com", tmp_path,
                               crl_pem=crl_before) is None

    status, revoked, _ = await api.request("POST", f"/v1/pki/certificates/{cert['serial']}:revoke",
                                           json={"reason": "keyCompromise"})
    assert status == 200 and revoked["status"] == "revoked" and revoked["revocation_reason"] == "key_compromise"
    async with http.get(crl_url) as resp:
        assert resp.status == 200 and resp.content_type == "application/pkix-crl"
        crl = x509.load_der_x509_crl(await resp.read())
    entry = crl.get_revoked_certificate_by_serial_number(leaf.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    issuer = x509.load_pem_x509_certificate(hierarchy["inter"]["certificate"].encode())
    assert crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    crl_pem = crl.public_bytes(serialization.Encoding.PEM).decode()
    error = await tls_handshake(chain, cert["private_key"], bundle_pem, "tls.example.com", tmp_path, crl_pem=crl_pem)
    assert error is not None and "revoked" in error

    again = await api.request("POST", f"/v1/pki/certificates/{cert['serial']}:revoke", json={"reason": "superseded"})
    assert again[0] == 200 and again[1]["revocation_reason"] == "key_compromise"  # the first revocation stands
    assert again[1]["revoked_at"] == revoked["revoked_at"]


async def test_ocsp_says_good_then_revoked_to_openssl_and_over_get(api: Api, hierarchy: dict[str, Any],
                                                                   platform: Platform, http: aiohttp.ClientSession,
                                                                   tmp_path: Path) -> None:
    cert = await issue(api, hierarchy["server"], "ocsp.example.com")
    leaf = x509.load_pem_x509_certificate(cert["certificate"].encode())
    issuer = x509.load_pem_x509_certificate(hierarchy["inter"]["certificate"].encode())
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp_url = aia[0].access_location.value
    assert ocsp_url == f"{platform.url}/v1/pki/ocsp"
    files = [write(tmp_path, "issuer.pem", hierarchy["inter"]["certificate"]),
             write(tmp_path, "leaf.pem", cert["certificate"]),
             write(tmp_path, "root.pem", hierarchy["root"]["certificate"])]
    command = ("openssl", "ocsp", "-issuer", files[0], "-cert", files[1], "-url", ocsp_url, "-CAfile", files[2])

    async def by_get() -> ocsp.OCSPResponse:
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256()).build()
        encoded = quote(base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode(), safe="")
        async with http.get(f"{ocsp_url}/{encoded}") as resp:
            assert resp.status == 200 and resp.content_type == "application/ocsp-response"
            return ocsp.load_der_ocsp_response(await resp.read())

    code, out = await run(*command)
    assert code == 0 and f"{files[1]}: good" in out and "Response verify OK" in out, out
    assert (await by_get()).certificate_status == ocsp.OCSPCertStatus.GOOD
    assert (await api.request("POST", f"/v1/pki/certificates/{cert['serial']}:revoke",
                              json={"reason": "cessation_of_operation"}))[0] == 200
    code, out = await run(*command)
    assert code == 0 and f"{files[1]}: revoked" in out and "Response verify OK" in out, out
    got = await by_get()
    assert got.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert got.revocation_reason == x509.ReasonFlags.cessation_of_operation

    async with http.post(f"{platform.url}/v1/pki/ocsp", data=b"\x30\x03junk",
                         headers={"Content-Type": "application/ocsp-request"}) as resp:
        assert resp.status == 200
        assert ocsp.load_der_ocsp_response(await resp.read()).response_status == \
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    foreign_key = rsa.generate_private_key(65537, 2048)
    foreign = (x509.CertificateBuilder().subject_name(issuer.subject).issuer_name(issuer.subject)
               .public_key(foreign_key.public_key()).serial_number(5).not_valid_before(leaf.not_valid_before_utc)
               .not_valid_after(leaf.not_valid_after_utc).sign(foreign_key, hashes.SHA256()))
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, foreign, hashes.SHA1()).build()
    async with http.post(f"{platform.url}/v1/pki/ocsp", data=request.public_bytes(serialization.Encoding.DER)) as resp:
        assert ocsp.load_der_ocsp_response(await resp.read()).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


async def test_csr_approval_by_another_identity_with_its_events(api: Api, platform: Platform,
                                                                hierarchy: dict[str, Any]) -> None:
    from tests.e2e.iam_helpers import allow, identity

    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await platform.bus.subscribe("test-csr-events-" + unique(), ["csr.#", "certificate.#"], on)
    role = hierarchy["server"]
    submitter = await identity(api, ["pki"], [allow([f"pki/roles/{role}"], ["write", "read", "approve"])])
    approver = await identity(api, ["pki"], [allow([f"pki/roles/{role}"], ["approve", "read", "list"])])
    status, csr, _ = await api.request("POST", "/v1/pki/csrs", token=submitter["token"],
                                       json={"csr": csr_pem("queue.example.com", ["queue.example.com"]), "role": role})
    assert status == 201 and csr["status"] == "pending" and csr["submitted_by"] == submitter["id"], csr
    assert csr["subject"] == "queue.example.com" and csr["sans"] == ["queue.example.com"]
    status, body, _ = await api.request("POST", f"/v1/pki/csrs/{csr['id']}:approve", token=submitter["token"])
    assert status == 403 and body["error"]["code"] == "forbidden"  # not by its submitter, whatever the policy
    status, signed, _ = await api.request("POST", f"/v1/pki/csrs/{csr['id']}:approve", token=approver["token"])
    assert status == 200 and signed["status"] == "signed" and signed["decided_by"] == approver["id"], signed
    cert = x509.load_pem_x509_certificate(signed["certificate"].encode())
    assert format(cert.serial_number, "x") == signed["serial"]
    assert signed["chain"][0] == hierarchy["inter"]["certificate"]
    for action in ("approve", "reject"):
        status, body, _ = await api.request("POST", f"/v1/pki/csrs/{csr['id']}:{action}", token=approver["token"],
                                            json={})
        assert status == 409 and body["error"]["code"] == "csr_already_processed"

    status, other, _ = await api.request("POST", "/v1/pki/csrs", token=submitter["token"],
                                         json={"csr": csr_pem("other.example.com"), "role": role})
    assert status == 201
    status, rejected, _ = await api.request("POST", f"/v1/pki/csrs/{other['id']}:reject", token=approver["token"],
                                            json={"reason": "not ours"})
    assert status == 200 and rejected["status"] == "rejected" and rejected["reason"] == "not ours"
    status, page, _ = await api.request("GET", "/v1/pki/csrs?status=pending", token=approver["token"])
    assert status == 200 and csr["id"] not in [c["id"] for c in page["items"]]
    status, page, _ = await api.request("GET", "/v1/pki/csrs?status=signed", token=approver["token"])
    assert csr["id"] in [c["id"] for c in page["items"]]

    def mine() -> list[str]:
        return [e.type for e in got if e.data.get("id") in (csr["id"], other["id"])]

    await wait_until(lambda: len(mine()) >= 4, timeout=15)
    assert sorted(mine()) == ["csr.approved", "csr.rejected", "csr.submitted", "csr.submitted"]
    await wait_until(lambda: any(e.type == "certificate.issued" and e.data["serial"] == signed["serial"]
                                 for e in got), timeout=15)
    assert "PRIVATE KEY" not in repr([e.model_dump() for e in got])


async def test_expiring_once_per_certificate_and_events_carry_no_key(api: Api, platform: Platform,
                                                                     hierarchy: dict[str, Any]) -> None:
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await platform.bus.subscribe("test-cert-events-" + unique(), ["certificate.#"], on)
    short = await make_role(api, hierarchy["inter"]["id"], ttl="1h", max_ttl="2h")  # within the 30 d notice
    certs = [await issue(api, short, f"short{i}.example.com") for i in range(2)]
    serials = {c["serial"] for c in certs}

    def expiring() -> list[Event]:
        return [e for e in got if e.type == "certificate.expiring" and e.data["serial"] in serials]

    await wait_until(lambda: len(expiring()) >= 2, timeout=15)
    await asyncio.sleep(1.0)  # a few more sweeps: no repeats
    assert sorted(e.data["serial"] for e in expiring()) == sorted(serials)
    issued = [e for e in got if e.type == "certificate.issued" and e.data["serial"] in serials]
    assert len(issued) == 2 and issued[0].data["ca_id"] == hierarchy["inter"]["id"]
    assert all(e.tenant_id and e.request_id for e in expiring() + issued)
    dump = repr([e.model_dump() for e in got])
    assert "PRIVATE KEY" not in dump and not any(c["private_key"][40:80] in dump for c in certs)
    inter = hierarchy["inter"]["id"]
    status, page, _ = await api.request("GET", f"/v1/pki/certificates?expiring_within=2h&ca_id={inter}")
    assert status == 200 and serials <= {c["serial"] for c in page["items"]}
    assert all(c["status"] == "valid" for c in page["items"] if c["serial"] in serials)


async def test_rsa_4096_keys_are_made_off_the_event_loop(
    api: Api, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RSA-4096 CA keys are generated in a thread that runs no event loop, so the loop keeps turning.

    The loop's longest pause is printed, not asserted: on a shared 2-core VM a stall of the whole machine
    (once 538 ms in CI) says nothing about where the key was made; which thread made it does."""
    made_on: list[bool] = []
    generate = keys.generate

    def recording(key_type: str) -> keys.PrivateKey:
        try:
            asyncio.get_running_loop()
            made_on.append(True)
        except RuntimeError:
            made_on.append(False)
        return generate(key_type)

    monkeypatch.setattr(keys, "generate", recording)
    worst = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal worst
        while not stop:
            started = time.perf_counter()
            await asyncio.sleep(0.02)
            worst = max(worst, time.perf_counter() - started - 0.02)

    tick = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        cas = await asyncio.gather(*(make_ca(api, key_type="rsa-4096") for _ in range(2)))
    finally:
        stop = True
        await tick
    took = time.perf_counter() - started
    assert all(ca["key_type"] == "rsa-4096" for ca in cas)
    key = x509.load_pem_x509_certificate(cas[0]["certificate"].encode()).public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    print(f"two RSA-4096 CAs in {took:.2f}s; the loop's longest pause {worst * 1000:.0f} ms")
    assert made_on == [False, False], "a key was generated on an event loop's thread"


async def test_every_pki_endpoint_answers_in_this_run_mode(api: Api, hierarchy: dict[str, Any]) -> None:
    """The reads, lists and deletes the flows above don't reach, once each."""
    inter, role = hierarchy["inter"], hierarchy["server"]
    assert (await api.request("GET", f"/v1/pki/cas/{inter['id']}"))[1]["id"] == inter["id"]
    status, page, _ = await api.request("GET", "/v1/pki/cas?limit=1")
    assert status == 200 and len(page["items"]) == 1 and page["next_cursor"]
    status, page, _ = await api.request("GET", f"/v1/pki/cas?limit=1&cursor={page['next_cursor']}")
    assert status == 200 and len(page["items"]) == 1
    status, got, _ = await api.request("GET", f"/v1/pki/roles/{role}")
    assert status == 200 and got["name"] == role and got["allowed_domains"] == ["example.com"]
    assert role in [r["name"] for r in (await api.request("GET", "/v1/pki/roles?limit=1000"))[1]["items"]]
    cert = await issue(api, role, "every.example.com")
    status, view, _ = await api.request("GET", f"/v1/pki/certificates/{cert['serial'].upper()}")
    assert status == 200 and view["serial"] == cert["serial"] and view["status"] == "valid"
    assert view["sans"] == ["every.example.com"] and view["role"] == role and "private_key" not in view
    status, csr, _ = await api.request("POST", "/v1/pki/csrs", json={"csr": csr_pem("c.example.com"), "role": role})
    assert (await api.request("GET", f"/v1/pki/csrs/{csr['id']}"))[1]["status"] == "pending"
    status, anchor, _ = await api.request("POST", "/v1/pki/trust-anchors", json={
        "name": unique("anchor-"), "certificate": hierarchy["root"]["certificate"]})
    assert status == 201 and anchor["subject"] == "CN=Coffer Test Root"
    assert (await api.request("GET", f"/v1/pki/trust-anchors/{anchor['id']}"))[1]["name"] == anchor["name"]
    assert anchor["id"] in [a["id"] for a in (await api.request("GET", "/v1/pki/trust-anchors"))[1]["items"]]
    assert (await api.request("DELETE", f"/v1/pki/trust-anchors/{anchor['id']}"))[0] == 204
    spare_role = await make_role(api, inter["id"])
    assert (await api.request("DELETE", f"/v1/pki/roles/{spare_role}"))[0] == 204
    spare_ca = await make_ca(api)
    assert (await api.request("DELETE", f"/v1/pki/cas/{spare_ca['id']}"))[0] == 204
    assert (await api.request("GET", f"/v1/pki/cas/{spare_ca['id']}"))[0] == 404
