"""What callers hand the PKI in PEM: CSRs and trust anchors, parsed and checked, nothing trusted.

A CSR contributes its public key and the names it asks for, and nothing else:
its signature must verify, its key must be a type the PKI signs, and its
names (CN, DNS and IP SANs) are then checked against the role like any
``:issue`` request's. Its other attributes and extensions are ignored.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from services.pki import keys
from services.pki.keys import PublicKey
from services.pki.names import IpAddress
from shared.errors import CsrInvalid, DomainNotAllowed, ValidationError


@dataclass(frozen=True)
class ParsedCsr:
    public_key: PublicKey
    key_type: str | None
    common_name: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IpAddress, ...]

    @property
    def sans(self) -> list[str]:
        return [*self.dns_names, *(str(ip) for ip in self.ip_addresses)]


def parse_csr(text: str) -> ParsedCsr:
    """The CSR in ``text`` (PEM), its signature verified; ``csr_invalid`` otherwise (CPU work)."""
    try:
        csr = x509.load_pem_x509_csr(text.encode())
        signature_ok = csr.is_signature_valid
        subject = csr.subject
        public = csr.public_key()
    except (ValueError, TypeError, UnicodeError):
        raise CsrInvalid("not a PEM certificate signing request") from None
    except x509.UnsupportedGeneralNameType:
        raise CsrInvalid("the CSR holds a name of an unsupported type") from None
    if not signature_ok:
        raise CsrInvalid("the CSR's signature does not verify")
    try:
        cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        extension = None
    except (ValueError, x509.DuplicateExtension):
        raise CsrInvalid("the CSR's extensions do not parse") from None
    if len(cns) > 1:
        raise CsrInvalid("the CSR has more than one common name")
    dns: list[str] = []
    ips: list[IpAddress] = []
    for name in extension or ():
        if isinstance(name, x509.DNSName):
            dns.append(name.value)
        elif isinstance(name, x509.IPAddress) and isinstance(name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            ips.append(name.value)
        else:
            raise DomainNotAllowed("a CSR may ask for DNS names and IP addresses only",
                                   details={"name": str(name.value)[:260]})
    cn = str(cns[0].value) if cns else (dns[0] if dns else "")
    if not cn:
        raise CsrInvalid("the CSR names no subject: no common name and no DNS name")
    if not isinstance(public, keys.SUPPORTED_PUBLIC):
        raise CsrInvalid("the CSR's key is not of a type the PKI signs")
    return ParsedCsr(public, keys.type_of(public), cn, tuple(dns), tuple(ips))


@dataclass(frozen=True)
class ParsedAnchor:
    certificate: str
    subject: str
    not_after: datetime
    fingerprint_sha256: str


def parse_anchor(text: str) -> ParsedAnchor:
    """A trust anchor: one PEM CA certificate (``validation_error`` naming ``certificate`` otherwise)."""
    try:
        cert = x509.load_pem_x509_certificate(text.encode())
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise ValidationError.on("certificate", "not a CA certificate (no basic constraints)") from None
    except (ValueError, TypeError, UnicodeError):
        raise ValidationError.on("certificate", "not a PEM certificate") from None
    if not constraints.ca:
        raise ValidationError.on("certificate", "not a CA certificate (basic constraints: CA false)")
    return ParsedAnchor(
        certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),  # our encoding, not the caller's text
        subject=cert.subject.rfc4514_string()[:1000], not_after=cert.not_valid_after_utc,
        fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex())
