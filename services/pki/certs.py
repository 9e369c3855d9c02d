"""Building what a CA signs: CA certificates, leaf certificates, CRLs and OCSP responses.

Pure functions on ``cryptography``'s X.509 builders (CPU work: the handlers
run them through ``run_cpu``). Nothing of a CSR is copied into a certificate
but its public key: the subject and SANs are the ones the role checked, and
every extension is set here. A subject is made by ``x500.name`` only, so no
value reaches ``cryptography`` unchecked.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from services.pki import keys, x500
from services.pki.keys import PrivateKey, PublicKey
from services.pki.names import CheckedNames

EXT_KEY_USAGES: dict[str, x509.ObjectIdentifier] = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}

#: RFC 5280 §5.3.1 reasons a caller may give (``remove_from_crl`` is for delta CRLs, and a hold,
#: which can be lifted, is not offered: a revocation here is final)
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aa_compromise": x509.ReasonFlags.aa_compromise,
}


def new_serial() -> int:
    """A positive serial of 159 random bits (RFC 5280: ≤ 20 octets; CA/B: ≥ 64 bits of entropy)."""
    return secrets.randbits(159) | (1 << 64)


def serial_hex(serial: int) -> str:
    return format(serial, "x")


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_pem(text: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(text.encode())


@dataclass(frozen=True)
class Issuer:
    """A CA that signs: its certificate, its private key, and where relying parties find its status."""

    certificate: x509.Certificate
    key: PrivateKey
    #: the CRL distribution point and OCSP URL put into what it signs (``COFFER_PUBLIC_URL`` set)
    crl_url: str | None = None
    ocsp_url: str | None = None


def _locations(builder: x509.CertificateBuilder, issuer: Issuer) -> x509.CertificateBuilder:
    if issuer.crl_url:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(issuer.crl_url)], relative_name=None, reasons=None,
            crl_issuer=None)]), critical=False)
    if issuer.ocsp_url:
        builder = builder.add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(issuer.ocsp_url))]),
            critical=False)
    return builder


def _subject(common_name: str) -> x509.Name:
    return x500.name(common_name=common_name)


def _authority_key_id(issuer: Issuer) -> x509.AuthorityKeyIdentifier:
    ski = issuer.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_ca(common_name: str, key: PrivateKey, serial: int, not_before: datetime, not_after: datetime,
             path_length: int | None, issuer: Issuer | None = None) -> x509.Certificate:
    """A root CA certificate (``issuer`` None: self-signed) or an intermediate signed by ``issuer``."""
    subject = _subject(common_name)
    public = key.public_key()
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.certificate.subject if issuer else subject)
               .public_key(public)
               .serial_number(serial)
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=True, crl_sign=True, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))
    if issuer is None:
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        return builder.sign(key, keys.signature_hash(key))
    builder = _locations(builder.add_extension(_authority_key_id(issuer), critical=False), issuer)
    return builder.sign(issuer.key, keys.signature_hash(issuer.key))


def build_leaf(public: PublicKey, names: CheckedNames, serial: int, not_before: datetime, not_after: datetime,
               ext_key_usage: tuple[str, ...], issuer: Issuer) -> x509.Certificate:
    """An end-entity certificate for ``public`` carrying exactly ``names``."""
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names.dns]
    sans.extend(x509.IPAddress(ip) for ip in names.ips)
    builder = (x509.CertificateBuilder()
               .subject_name(_subject(names.common_name))
               .issuer_name(issuer.certificate.subject)
               .public_key(public)
               .serial_number(serial)
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                            key_encipherment=isinstance(public, rsa.RSAPublicKey),
                                            data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
               .add_extension(_authority_key_id(issuer), critical=False))
    if ext_key_usage:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([EXT_KEY_USAGES[u] for u in ext_key_usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return _locations(builder, issuer).sign(issuer.key, keys.signature_hash(issuer.key))


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    reason: str


def build_crl(issuer: Issuer, revoked: list[Revoked], number: int, this_update: datetime,
              next_update: datetime) -> bytes:
    """The CA's CRL (DER): every certificate it revoked, with the reason, numbered."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.certificate.subject)
               .last_update(this_update)
               .next_update(next_update)
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(_authority_key_id(issuer), critical=False))
    for entry in revoked:
        item = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        if entry.reason != "unspecified":  # RFC 5280: omit the reason code rather than say unspecified
            item = item.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    crl = builder.sign(issuer.key, keys.signature_hash(issuer.key))
    return crl.public_bytes(serialization.Encoding.DER)


def crl_pem(der: bytes) -> str:
    return x509.load_der_x509_crl(der).public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class OcspStatus:
    """One certificate's status as the CA's records have it (``None`` serial unknown to the CA)."""

    known: bool
    revoked_at: datetime | None = None
    reason: str | None = None


def ocsp_response(issuer: Issuer, request: ocsp.OCSPRequest, status: OcspStatus, this_update: datetime,
                  next_update: datetime) -> bytes:
    """A successful OCSP response (DER) for ``request``'s certificate, signed by the issuing CA, the
    request's nonce echoed."""
    if not status.known:
        cert_status, revoked_at, reason = ocsp.OCSPCertStatus.UNKNOWN, None, None
    elif status.revoked_at is not None:
        cert_status, revoked_at = ocsp.OCSPCertStatus.REVOKED, status.revoked_at
        reason = REASONS[status.reason] if status.reason and status.reason != "unspecified" else None
    else:
        cert_status, revoked_at, reason = ocsp.OCSPCertStatus.GOOD, None, None
    builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
        issuer_name_hash=request.issuer_name_hash, issuer_key_hash=request.issuer_key_hash,
        serial_number=request.serial_number, algorithm=request.hash_algorithm, cert_status=cert_status,
        this_update=this_update, next_update=next_update, revocation_time=revoked_at, revocation_reason=reason,
    ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer.certificate)
    try:
        nonce = request.extensions.get_extension_for_class(x509.OCSPNonce).value
    except x509.ExtensionNotFound:
        pass
    else:
        builder = builder.add_extension(nonce, critical=False)
    response = builder.sign(issuer.key, keys.signature_hash(issuer.key))
    return response.public_bytes(serialization.Encoding.DER)


def ocsp_refusal(status: ocsp.OCSPResponseStatus) -> bytes:
    """An unsigned OCSP answer: ``malformedRequest``, ``unauthorized`` (not one of our CAs) …"""
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(serialization.Encoding.DER)


def issuer_hashes(cert: x509.Certificate) -> dict[str, tuple[bytes, bytes]]:
    """``{hash name: (issuer name hash, issuer key hash)}`` an OCSP request names this CA by (SHA-1,
    which clients such as ``openssl ocsp`` send, and SHA-256): RFC 6960's hashes of the CA's subject
    (DER) and of its public key's bits (as ``cryptography`` computes the latter for a request)."""
    out = {}
    for algorithm in (hashes.SHA1(), hashes.SHA256()):
        probe = ocsp.OCSPRequestBuilder().add_certificate(cert, cert, algorithm).build()
        digest = hashes.Hash(algorithm)
        digest.update(cert.subject.public_bytes())
        out[algorithm.name] = (digest.finalize(), probe.issuer_key_hash)
    return out
