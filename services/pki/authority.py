"""The PKI's work: making CAs, issuing and signing under roles, revoking, answering CRL and OCSP.

Keys: a CA's private key is sealed (AES-256-GCM under a fresh data key
wrapped by the KMS, associated data ``pki/ca/<id>``) before it reaches SQL;
each replica keeps the CAs it signed with recently unsealed in memory (at
most ``KEY_CACHE`` of them, each checked against its row's ciphertext on
use, and only after the row was read for the tenant asking). A leaf's key
made by ``:issue`` is returned once and never stored.

CPU work (key generation, building and signing certificates, CRLs and OCSP
answers, verifying CSRs) runs in ``shared.cpu``'s threads: RSA-4096 key
generation takes about a second, and the event loop goes on meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.x509 import ocsp

from services.pki import certs, keys, x500
from services.pki.certs import Issuer, OcspStatus, Revoked
from services.pki.inputs import ParsedCsr, parse_csr
from services.pki.names import CheckedNames, NameRules, check_ip, check_names
from services.pki.repository import PkiRepository, Row
from shared.contracts.pki import CaCreate, RoleBody
from shared.contracts.times import rfc3339
from shared.cpu import run_cpu
from shared.crypto import Sealed, seal, unseal
from shared.durations import parse_duration
from shared.errors import CsrInvalid, KeyTypeMismatch, TtlExceedsMax, ValidationError
from shared.keyring import ServiceKeyring

KEY_CACHE = 256
OCSP_CACHE = 20_000
#: a certificate's not_before is set this far back, for relying parties whose clocks run behind
BACKDATE = timedelta(seconds=30)


def ca_aad(ca_id: str) -> bytes:
    return f"pki/ca/{ca_id}".encode()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Authority:
    def __init__(self, repo: PkiRepository, kms: ServiceKeyring, public_url: str | None, crl_lifetime: int,
                 ocsp_lifetime: int) -> None:
        self.repo = repo
        self.kms = kms
        self.public_url = public_url.rstrip("/") if public_url else None
        self.crl_lifetime = timedelta(seconds=crl_lifetime)
        self.ocsp_lifetime = timedelta(seconds=ocsp_lifetime)
        self._issuers: dict[str, tuple[bytes, Issuer]] = {}
        self._chains: dict[str, list[str]] = {}
        self._ocsp: dict[tuple[Any, ...], tuple[datetime, bytes]] = {}

    # -- the CA's key, unsealed ----------------------------------------------------------------

    async def issuer(self, ca: Row) -> Issuer:
        """The CA of ``ca`` (a row with its sealed key) ready to sign."""
        cached = self._issuers.get(ca["id"])
        if cached is not None and cached[0] == ca["ciphertext"]:
            return cached[1]
        sealed = Sealed(ca["kek_id"], ca["wrapped_key"], ca["nonce"], ca["ciphertext"])
        der = unseal(self.kms.tenant(ca["tenant_id"]), sealed, ca_aad(ca["id"]))
        key = await run_cpu(keys.from_der, der)
        crl_url, ocsp_url = self.locations(ca["id"])
        issuer = Issuer(certs.load_pem(ca["certificate"]), key, crl_url, ocsp_url)
        if len(self._issuers) >= KEY_CACHE:
            self._issuers.pop(next(iter(self._issuers)))
        self._issuers[ca["id"]] = (ca["ciphertext"], issuer)
        return issuer

    def locations(self, ca_id: str) -> tuple[str | None, str | None]:
        """Where relying parties check what ``ca_id`` signed: its CRL and the OCSP responder."""
        if not self.public_url:
            return None, None
        return f"{self.public_url}/v1/pki/cas/{ca_id}/crl", f"{self.public_url}/v1/pki/ocsp"

    async def chain(self, tenant_id: str, ca_id: str) -> list[str]:
        """The CA's chain up to its root (a CA's never changes: kept once read)."""
        chain = self._chains.get(ca_id)
        if chain is None:
            chain = await self.repo.chain(tenant_id, ca_id)
            if len(self._chains) >= KEY_CACHE:
                self._chains.pop(next(iter(self._chains)))
            self._chains[ca_id] = chain
        return chain

    # -- CAs -----------------------------------------------------------------------------------

    async def create_ca(self, tenant_id: str, request_id: str, req: CaCreate) -> Row:
        x500.check("common_name", req.common_name)  # before a key is made or the parent is read
        start = now()
        not_after = start + timedelta(seconds=parse_duration(req.ttl))
        path_length = req.max_path_length
        parent: Issuer | None = None
        if req.parent_id is not None:
            parent_row = await self.repo.ca(tenant_id, req.parent_id, with_key=True)
            parent = await self.issuer(parent_row)
            limit = parent.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
            if limit is not None:
                if limit == 0:
                    raise ValidationError.on("parent_id", "the parent CA may not sign CAs (its max_path_length is 0)")
                if path_length is None or path_length > limit - 1:
                    if path_length is not None:
                        raise ValidationError.on("max_path_length", f"at most {limit - 1} under this parent")
                    path_length = limit - 1
            if not_after > parent_row["not_after"]:
                raise TtlExceedsMax("the CA would outlive its parent", details={
                    "ttl": req.ttl, "parent_not_after": rfc3339(parent_row["not_after"])})
        ca_id = "ca_" + secrets.token_hex(10)
        serial = certs.new_serial()
        key = await run_cpu(keys.generate, req.key_type)
        cert = await run_cpu(certs.build_ca, req.common_name, key, serial, start - BACKDATE, not_after,
                             path_length, parent)
        itself = Issuer(cert, key)
        crl = await run_cpu(certs.build_crl, itself, [], 1, start, start + self.crl_lifetime)
        values = {"id": ca_id, "tenant_id": tenant_id, "name": req.name, "common_name": req.common_name,
                  "key_type": req.key_type, "parent_id": req.parent_id, "serial": certs.serial_hex(serial),
                  "not_before": start - BACKDATE, "not_after": not_after, "max_path_length": path_length,
                  "certificate": certs.pem(cert)}
        issued: dict[str, Any] | None = None
        if req.parent_id is not None:  # the intermediate is one of its parent's certificates
            issued = {"serial": values["serial"], "tenant_id": tenant_id, "ca_id": req.parent_id, "role": None,
                      "common_name": req.common_name, "sans": [], "ip_sans": [], "not_before": start - BACKDATE,
                      "not_after": not_after, "certificate": values["certificate"]}
        sealed = seal(self.kms.tenant(tenant_id), keys.to_der(key), ca_aad(ca_id))
        return await self.repo.insert_ca(values, sealed, certs.issuer_hashes(cert),
                                         (crl, start + self.crl_lifetime), issued, request_id)

    # -- issuing -------------------------------------------------------------------------------

    def _validity(self, role: RoleBody, ttl: str | None, ca: Row) -> tuple[datetime, datetime]:
        max_ttl = parse_duration(role.max_ttl, field="max_ttl")
        seconds = parse_duration(ttl) if ttl is not None else min(parse_duration(role.ttl), max_ttl)
        if seconds > max_ttl:
            raise TtlExceedsMax(f"the ttl is longer than the role's max_ttl ({role.max_ttl})",
                                details={"ttl": ttl, "max_ttl": role.max_ttl})
        start = now()
        not_after = start + timedelta(seconds=seconds)
        if not_after > ca["not_after"]:
            raise TtlExceedsMax("the certificate would outlive its CA", details={
                "ttl": ttl or role.ttl, "ca_not_after": rfc3339(ca["not_after"])})
        return start - BACKDATE, not_after

    async def _sign(self, tenant_id: str, role_name: str, role: RoleBody, subject: keys.PublicKey | str,
                    names: CheckedNames, ttl: str | None) -> tuple[dict[str, Any], str | None]:
        """A certificate of the role's CA for ``subject`` — a public key, or a key type to make a key of
        first (in the same trip to the CPU pool): (its record, the new key's PEM or ``None``)."""
        ca = await self.repo.ca(tenant_id, role.ca_id, with_key=True)
        not_before, not_after = self._validity(role, ttl, ca)
        issuer = await self.issuer(ca)
        serial = certs.new_serial()
        key_pem, cert_pem = await run_cpu(_build, subject, names, serial, not_before, not_after,
                                          tuple(role.ext_key_usage), issuer)
        record = {"serial": certs.serial_hex(serial), "tenant_id": tenant_id, "ca_id": ca["id"], "role": role_name,
                  "common_name": names.common_name, "sans": list(names.dns), "ip_sans": [str(i) for i in names.ips],
                  "not_before": not_before, "not_after": not_after, "certificate": cert_pem}
        return record, key_pem

    async def issue(self, tenant_id: str, request_id: str, role_name: str, role: RoleBody, common_name: str,
                    alt_names: Sequence[str], ip_sans: Sequence[str], ttl: str | None,
                    max_certificates: int | None) -> tuple[dict[str, Any], str]:
        """A new key and a certificate for it: (the certificate's record, the key's PEM)."""
        if role.key_type == "any":
            raise KeyTypeMismatch("a role of key_type 'any' signs CSRs only: :issue needs a role with a key type",
                                  details={"key_type": "any"})
        names = check_names(name_rules(role), common_name, alt_names, ip_sans)
        x500.check("common_name", names.common_name)  # A-labels or an address: the length is what is left
        record, key_pem = await self._sign(tenant_id, role_name, role, role.key_type, names, ttl)
        assert key_pem is not None
        await self.repo.insert_certificate(record, request_id, max_certificates)
        return record, key_pem

    async def check_csr(self, role: RoleBody, text: str) -> tuple[ParsedCsr, CheckedNames]:
        """A CSR against a role: it verifies, its key is of the role's type, its names are allowed."""
        csr = await run_cpu(parse_csr, text)
        if not keys.accepts(role.key_type, csr.key_type):
            raise KeyTypeMismatch(f"the role signs {role.key_type} keys, the CSR's is {csr.key_type or 'another kind'}",
                                  details={"key_type": role.key_type, "csr_key_type": csr.key_type})
        rules = name_rules(role)
        names = check_names(rules, csr.common_name, csr.dns_names, ())
        ips = tuple(dict.fromkeys((*names.ips, *(check_ip(rules, ip) for ip in csr.ip_addresses))))
        why = x500.problem(x500.ATTRIBUTES["common_name"], names.common_name)
        if why is not None:
            raise CsrInvalid(f"the CSR's common name can't be a certificate's: {why}")
        return csr, CheckedNames(names.common_name, names.dns, ips)

    async def sign(self, tenant_id: str, role_name: str, role: RoleBody, text: str,
                   ttl: str | None) -> dict[str, Any]:
        """A certificate for a CSR's key (not stored: the caller records it)."""
        csr, names = await self.check_csr(role, text)
        record, _ = await self._sign(tenant_id, role_name, role, csr.public_key, names, ttl)
        return record

    # -- revocation: the CRL, OCSP ---------------------------------------------------------------

    async def sign_crl(self, ca: Row, revoked: Sequence[Row], number: int) -> tuple[bytes, datetime]:
        issuer = await self.issuer(ca)
        entries = [Revoked(int(r["serial"], 16), r["revoked_at"], r["revocation_reason"] or "unspecified")
                   for r in revoked]
        start = now()
        der = await run_cpu(certs.build_crl, issuer, entries, number, start, start + self.crl_lifetime)
        return der, start + self.crl_lifetime

    async def refresh_crls(self, limit: int = 20) -> int:
        """Re-sign (up to ``limit``) CRLs with less than a third of their life left."""
        return await self.repo.refresh_crls(self.sign_crl, now() + self.crl_lifetime / 3, min(limit, 20))

    async def ocsp(self, request_b64: str) -> bytes:
        """The OCSP response (DER) to a request (DER, base64)."""
        try:
            request = ocsp.load_der_ocsp_request(base64.b64decode(request_b64, validate=True))
            algorithm = request.hash_algorithm.name
            serial = request.serial_number
        except (ValueError, TypeError, NotImplementedError, binascii.Error):
            return certs.ocsp_refusal(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
        if algorithm not in ("sha1", "sha256"):
            return certs.ocsp_refusal(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        ca = await self.repo.ocsp_subject(algorithm, request.issuer_name_hash, request.issuer_key_hash,
                                          certs.serial_hex(serial))
        if ca is None:  # not one of our CAs: we can't answer for it
            return certs.ocsp_refusal(ocsp.OCSPResponseStatus.UNAUTHORIZED)
        status = OcspStatus(ca["known"], ca["cert_revoked_at"], ca["cert_revocation_reason"])
        try:
            request.extensions.get_extension_for_class(x509.OCSPNonce)
            nonce = True
        except x509.ExtensionNotFound:
            nonce = False
        key = (ca["id"], serial, algorithm, status)
        start = now()
        if not nonce:  # an answer without a nonce is the same for everyone: signed once, reused a while
            cached = self._ocsp.get(key)
            if cached is not None and start - cached[0] < self.ocsp_lifetime / 2:
                return cached[1]
        issuer = await self.issuer(ca)
        der = await run_cpu(certs.ocsp_response, issuer, request, status, start, start + self.ocsp_lifetime)
        if not nonce:
            if len(self._ocsp) >= OCSP_CACHE:
                self._ocsp.clear()
            self._ocsp[key] = (start, der)
        return der


def name_rules(role: RoleBody) -> NameRules:
    return NameRules(tuple(role.allowed_domains), role.allow_subdomains, role.allow_wildcards,
                     role.allow_bare_domains, role.allow_ip_sans)


def _build(subject: keys.PublicKey | str, names: CheckedNames, serial: int, not_before: datetime,
           not_after: datetime, ext_key_usage: tuple[str, ...], issuer: Issuer) -> tuple[str | None, str]:
    """(CPU pool) the key if asked for, the certificate built and signed, both as PEM."""
    key = keys.generate(subject) if isinstance(subject, str) else None
    public = key.public_key() if key is not None else subject
    assert not isinstance(public, str)
    cert = certs.build_leaf(public, names, serial, not_before, not_after, ext_key_usage, issuer)
    return (keys.to_pem(key) if key is not None else None), certs.pem(cert)
