"""The ACME client's pure parts: ARI's certificate id (RFC 9773's own example), Retry-After, problem
documents trimmed to what a caller may see, nameserver forms, order names."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.pki.acme.dns import split_nameserver
from services.pki.acme.protocol import _problem, _retry_after, cert_id
from services.pki.acme.service import normalize_acme_domains
from shared.errors import ValidationError


def _cert(aki: bytes | None, serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial).not_valid_before(now).not_valid_after(now + timedelta(days=1)))
    if aki is not None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
    return builder.sign(key, hashes.SHA256())


def test_ari_certificate_id_is_rfc_9773s_example() -> None:
    # RFC 9773 §4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4,
    # serial 0x87654321 (DER 00 87 65 43 21)
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert cert_id(_cert(aki, 0x87654321)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"
    assert cert_id(_cert(None, 5)) is None  # no AKI: no ARI id


def test_retry_after_seconds_and_dates_bounded() -> None:
    assert _retry_after("7") == 7
    assert _retry_after("999999999") == 86_400
    assert _retry_after(None) is None and _retry_after("soon") is None
    later = (datetime.now(UTC) + timedelta(seconds=120)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 100 <= (_retry_after(later) or 0) <= 120


def test_problem_documents_are_trimmed() -> None:
    doc = {"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "x" * 5000, "status": 400,
           "extra": {"huge": "y" * 10_000}, "subproblems": [{"type": "t", "detail": "d", "junk": 1}] * 50}
    out = _problem(json.dumps(doc).encode(), 400)
    assert out["type"] == doc["type"] and len(out["detail"]) == 1000 and "extra" not in out
    assert len(out["subproblems"]) == 20 and out["subproblems"][0] == {"type": "t", "detail": "d"}
    assert _problem(b"<html>oops</html>", 500) == {"type": "about:blank", "status": 500}
    assert _problem(b"[1, 2]", 400) == {"type": "about:blank", "status": 400}


@pytest.mark.parametrize(("text", "expected"), [
    ("ns1.example.com", ("ns1.example.com", 53)), ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    ("[2001:db8::1]:5300", ("2001:db8::1", 5300)), ("[2001:db8::1]", ("2001:db8::1", 53)),
    ("2001:db8::1", ("2001:db8::1", 53))])
def test_nameserver_forms(text: str, expected: tuple[str, int]) -> None:
    assert split_nameserver(text) == expected


@pytest.mark.parametrize("text", ["host:0", "host:65536", "host:http", "[::1]:x"])
def test_nameserver_bad_ports(text: str) -> None:
    with pytest.raises(ValueError):
        split_nameserver(text)


def test_order_names_are_a_labels_without_duplicates() -> None:
    assert normalize_acme_domains(["WWW.Example.com", "www.example.com", "*.Bücher.example"]) == [
        "www.example.com", "*.xn--bcher-kva.example"]
    for bad in (["localhost"], ["10.0.0.1"], ["*.*.example.com"], ["a..example.com"], ["ex ample.com"]):
        with pytest.raises(ValidationError):
            normalize_acme_domains(bad)
