"""The PKI's builders and parsers on their own: what a CA signs, what a CSR may contribute, CRL and OCSP.

(openssl and Python's ssl judge the results through the gateway in tests/e2e/test_pki.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.pki import certs, keys
from services.pki.certs import Issuer, OcspStatus, Revoked
from services.pki.inputs import parse_anchor, parse_csr
from services.pki.names import NameRules, check_names
from shared.errors import CsrInvalid, DomainNotAllowed, ValidationError

NOW = datetime.now(UTC).replace(microsecond=0)
LATER = NOW + timedelta(days=30)
RULES = NameRules(("example.com",), True, True, True, True)


@pytest.fixture(scope="module")
def root() -> Issuer:
    key = keys.generate("ec-p256")
    cert = certs.build_ca("Test Root", key, certs.new_serial(), NOW, NOW + timedelta(days=365), None)
    return Issuer(cert, key, "https://coffer.test/v1/pki/cas/ca_1/crl", "https://coffer.test/v1/pki/ocsp")


def _csr(key: keys.PrivateKey, cn: str | None, sans: list[x509.GeneralName], *extensions: x509.ExtensionType,
         extra_cn: bool = False) -> str:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []
    if extra_cn:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, "other.example.com"))
    attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mallory Inc"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=True)
    algorithm = None if keys.type_of(key) == "ed25519" else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM).decode()


@pytest.mark.parametrize("key_type", keys.KEY_TYPES)
def test_roots_and_intermediates_of_every_key_type_chain_up(root: Issuer, key_type: str) -> None:
    key = keys.generate(key_type)
    assert keys.type_of(key) == key_type and keys.type_of(key.public_key()) == key_type
    inter = certs.build_ca("Inter", key, certs.new_serial(), NOW, LATER, 0, root)
    inter.verify_directly_issued_by(root.certificate)
    constraints = inter.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = inter.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    points = inter.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name[0].value == root.crl_url  # the parent's CRL: where the intermediate is revoked
    self_signed = certs.build_ca("Own Root", key, certs.new_serial(), NOW, LATER, None)
    self_signed.verify_directly_issued_by(self_signed)


def test_a_leaf_carries_only_the_checked_names_and_none_of_the_csr_extensions(root: Issuer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    text = _csr(key, "WWW.example.com", [x509.DNSName("api.example.com"), x509.IPAddress(
        __import__("ipaddress").ip_address("192.0.2.1"))],
        x509.BasicConstraints(ca=True, path_length=None))  # a CSR asking to be a CA
    csr = parse_csr(text)
    names = check_names(RULES, csr.common_name, csr.dns_names, csr.ip_addresses)
    leaf = certs.build_leaf(csr.public_key, names, certs.new_serial(), NOW, LATER, ("server_auth",), root)
    leaf.verify_directly_issued_by(root.certificate)
    assert leaf.subject.rfc4514_string() == "CN=www.example.com"  # the CSR's O= dropped, the CN normalised
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["www.example.com", "api.example.com"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["192.0.2.1"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == root.ocsp_url
    assert {type(e.value) for e in leaf.extensions} == {
        x509.BasicConstraints, x509.KeyUsage, x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier,
        x509.ExtendedKeyUsage, x509.SubjectAlternativeName, x509.CRLDistributionPoints,
        x509.AuthorityInformationAccess}


def test_rsa_leaves_may_encipher_keys_and_ec_leaves_may_not(root: Issuer) -> None:
    names = check_names(RULES, "example.com")
    for key_type, encipher in (("rsa-2048", True), ("ec-p384", False), ("ed25519", False)):
        public = keys.generate(key_type).public_key()
        leaf = certs.build_leaf(public, names, certs.new_serial(), NOW, LATER, ("client_auth",), root)
        assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment is encipher


def test_csrs_that_must_be_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = _csr(key, "www.example.com", [])
    assert parse_csr(good).key_type == "ec-p256"
    with pytest.raises(CsrInvalid):
        parse_csr("not a csr")
    with pytest.raises(CsrInvalid):  # a signature that does not verify
        body = good.splitlines()
        middle = len(body) // 2
        body[middle] = body[middle][:-4] + ("AAAA" if body[middle][-4:] != "AAAA" else "BBBB")
        parse_csr("\n".join(body))
    with pytest.raises(CsrInvalid):
        parse_csr(_csr(key, "www.example.com", [], extra_cn=True))
    with pytest.raises(CsrInvalid):  # names nothing
        parse_csr(_csr(key, None, []))
    with pytest.raises(DomainNotAllowed):  # only DNS names and IP addresses
        parse_csr(_csr(key, "www.example.com", [x509.RFC822Name("a@example.com")]))
    with pytest.raises(DomainNotAllowed):
        parse_csr(_csr(key, "www.example.com", [x509.UniformResourceIdentifier("https://example.com")]))
    dsa_key = dsa.generate_private_key(2048)
    dsa_csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")]))
               .sign(dsa_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
    with pytest.raises(CsrInvalid):
        parse_csr(dsa_csr)


@pytest.mark.parametrize(("role", "key", "ok"), [
    ("any", "ed25519", True), ("any", None, False), ("ec-p256", "ec-p256", True), ("ec-p256", "ec-p384", False),
    ("rsa-2048", "rsa-4096", True), ("rsa-3072", "rsa-2048", False), ("rsa-2048", "ec-p256", False),
    ("ed25519", "ed25519", True), ("ec-p384", "rsa-4096", False),
])
def test_which_csr_keys_a_role_signs(role: str, key: str | None, ok: bool) -> None:
    assert keys.accepts(role, key) is ok


def test_unsupported_rsa_sizes_have_no_key_type() -> None:
    assert keys.type_of(rsa.generate_private_key(65537, 1024).public_key()) is None
    assert keys.type_of(ec.generate_private_key(ec.SECP521R1()).public_key()) is None


def test_the_crl_lists_revoked_serials_with_their_reasons(root: Issuer) -> None:
    der = certs.build_crl(root, [Revoked(0xABC, NOW, "key_compromise"), Revoked(0xDEF, NOW, "unspecified")], 7,
                          NOW, LATER)
    crl = x509.load_der_x509_crl(der)
    assert crl.is_signature_valid(root.certificate.public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert crl.next_update_utc == LATER
    entry = crl.get_revoked_certificate_by_serial_number(0xABC)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    unspecified = crl.get_revoked_certificate_by_serial_number(0xDEF)
    assert unspecified is not None and len(unspecified.extensions) == 0  # RFC 5280: no reason code for it
    assert "BEGIN X509 CRL" in certs.crl_pem(der)


def test_ocsp_answers_are_signed_by_the_ca_and_echo_the_nonce(root: Issuer) -> None:
    key = keys.generate("ec-p256")
    leaf = certs.build_leaf(key.public_key(), check_names(RULES, "example.com"), certs.new_serial(), NOW, LATER,
                            (), root)
    hashes_of_root = certs.issuer_hashes(root.certificate)
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        request = (ocsp.OCSPRequestBuilder().add_certificate(leaf, root.certificate, algorithm)
                   .add_extension(x509.OCSPNonce(b"0123456789abcdef"), critical=False).build())
        assert hashes_of_root[algorithm.name] == (request.issuer_name_hash, request.issuer_key_hash)
        for status, expected in ((OcspStatus(True), ocsp.OCSPCertStatus.GOOD),
                                 (OcspStatus(True, NOW, "superseded"), ocsp.OCSPCertStatus.REVOKED),
                                 (OcspStatus(False), ocsp.OCSPCertStatus.UNKNOWN)):
            response = ocsp.load_der_ocsp_response(certs.ocsp_response(root, request, status, NOW, LATER))
            assert response.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
            assert response.certificate_status == expected
            assert response.serial_number == leaf.serial_number
            root.certificate.public_key().verify(  # type: ignore[call-arg, union-attr]
                response.signature, response.tbs_response_bytes, ec.ECDSA(response.signature_hash_algorithm))
            nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            assert nonce == b"0123456789abcdef"
            if expected == ocsp.OCSPCertStatus.REVOKED:
                assert response.revocation_reason == x509.ReasonFlags.superseded
    refusal = ocsp.load_der_ocsp_response(certs.ocsp_refusal(ocsp.OCSPResponseStatus.UNAUTHORIZED))
    assert refusal.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_trust_anchors_must_be_ca_certificates(root: Issuer) -> None:
    anchor = parse_anchor("junk before\n" + certs.pem(root.certificate) + "junk after")
    assert anchor.certificate == certs.pem(root.certificate)  # our encoding, not the caller's text
    assert anchor.subject == "CN=Test Root"
    assert anchor.fingerprint_sha256 == root.certificate.fingerprint(hashes.SHA256()).hex()
    key = keys.generate("ec-p256")
    leaf = certs.build_leaf(key.public_key(), check_names(RULES, "example.com"), 5 << 70, NOW, LATER, (), root)
    for text in (certs.pem(leaf), "garbage", ""):
        with pytest.raises(ValidationError) as info:
            parse_anchor(text)
        assert info.value.details["fields"][0]["field"] == "certificate"


def test_serials_are_positive_random_and_at_most_20_octets() -> None:
    serials = {certs.new_serial() for _ in range(200)}
    assert len(serials) == 200
    assert all(0 < s < 2**159 and s >= 2**64 for s in serials)
    assert certs.serial_hex(0xABC) == "abc"


def test_an_intermediate_is_found_by_the_hashes_ocsp_requests_name_it_by(root: Issuer) -> None:
    inter_key = keys.generate("rsa-2048")
    inter = Issuer(certs.build_ca("Inter", inter_key, certs.new_serial(), NOW, LATER, None, root), inter_key)
    key = keys.generate("ec-p256")
    leaf = certs.build_leaf(key.public_key(), check_names(RULES, "example.com"), certs.new_serial(), NOW, LATER,
                            (), inter)
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, inter.certificate, algorithm).build()
        assert certs.issuer_hashes(inter.certificate)[algorithm.name] == (
            request.issuer_name_hash, request.issuer_key_hash)
        assert certs.issuer_hashes(root.certificate)[algorithm.name] != (
            request.issuer_name_hash, request.issuer_key_hash)
