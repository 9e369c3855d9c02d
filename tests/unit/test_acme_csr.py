"""The ACME client's CSR names every domain of the order, whatever its length (issue #27, item 9's class):
a domain longer than X.509 allows in a common name (64) made the order's CSR raise ValueError."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.pki.acme.orders import _csr

LONG = "a" * 58 + ".example.com"  # 70 characters: a valid DNS name, too long for a common name


def names(der: bytes) -> tuple[list[str], list[str]]:
    csr = x509.load_der_x509_csr(der)
    cn = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return cn, csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)


def test_a_domain_too_long_for_a_common_name_is_still_asked_for() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    assert names(_csr(key, [LONG, "www.example.com"])) == (["www.example.com"], [LONG, "www.example.com"])
    assert names(_csr(key, [LONG])) == ([], [LONG])  # no common name at all: the SANs carry the names
    assert names(_csr(key, ["example.com", LONG])) == (["example.com"], ["example.com", LONG])
    assert x509.load_der_x509_csr(_csr(key, [LONG])).is_signature_valid
