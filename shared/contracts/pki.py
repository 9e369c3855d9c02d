"""RPC contracts of the ``pki`` service (``pki.<method>``) and its typed client (api.md §6).

The gateway validates HTTP bodies with the same models; the service applies
the rules that need more than types (names against roles, CSRs, durations).
Binary answers (a CRL, an OCSP response) travel base64-encoded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StrictStr

from shared.context import RequestContext
from shared.contracts import DURATION_SCHEMA, Contract, Empty, JsonInt, Method, Page, PageRequest, ServiceClient

KeyTypeName = Literal["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"]
ExtKeyUsage = Literal["server_auth", "client_auth", "code_signing", "email_protection", "time_stamping",
                      "ocsp_signing"]
CsrStatus = Literal["pending", "signed", "rejected"]
#: a CA's, a trust anchor's name
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
#: a certificate serial as the API writes it: lower-case hex (upper case is accepted on the way in)
SERIAL_PATTERN = r"^[0-9a-fA-F]{1,40}$"
#: PEM texts: a CSR or a certificate is a few KiB; a chain of them stays far below this
MAX_PEM = 65_536
MAX_SANS = 100
#: the form of the ids the API hands out (``ca_…``): an id of another form is refused, never looked up
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class Ref(Contract):
    """A CA, a CSR or a trust anchor by id."""

    id: StrictStr = Field(min_length=1, max_length=64)


# -- CAs -------------------------------------------------------------------------------------

class CaCreate(Contract):
    name: StrictStr = Field(pattern=NAME_PATTERN)
    #: X.520's upper bound for a common name; the service checks the rest (``services.pki.x500``)
    common_name: StrictStr = Field(min_length=1, max_length=64, description=(
        "at most 64 characters and 64 bytes of UTF-8; no control, bidirectional-formatting, separator, "
        "private-use or unassigned characters (422 validation_error naming common_name)"))
    key_type: KeyTypeName = "ec-p256"
    ttl: StrictStr = Field("87600h", max_length=40, json_schema_extra=DURATION_SCHEMA)
    parent_id: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = None
    max_path_length: JsonInt | None = Field(None, ge=0, le=8)


class CaView(Contract):
    id: str
    name: str
    common_name: str
    key_type: str
    parent_id: str | None
    serial: str
    not_before: datetime
    not_after: datetime
    max_path_length: int | None
    certificate: str
    created_at: datetime


class Pem(Contract):
    """PEM text: a chain, a trust bundle, a CRL."""

    pem: str


class CrlRequest(Contract):
    id: StrictStr = Field(min_length=1, max_length=64)


class Crl(Contract):
    """A CA's current CRL: DER, base64."""

    der: str
    next_update: datetime


class OcspQuery(Contract):
    """An OCSP request (DER, base64) from a relying party."""

    request: StrictStr = Field(max_length=16_384)


class OcspAnswer(Contract):
    """The OCSP response (DER, base64)."""

    response: str


# -- roles -----------------------------------------------------------------------------------

class RoleBody(Contract):
    ca_id: StrictStr = Field(pattern=ID_PATTERN)
    allowed_domains: list[StrictStr] = Field(default_factory=list, max_length=1000)
    allow_subdomains: StrictBool = False
    allow_wildcards: StrictBool = False
    allow_bare_domains: StrictBool = False
    allow_ip_sans: StrictBool = False
    key_type: KeyTypeName | Literal["any"] = "ec-p256"
    ttl: StrictStr = Field("720h", max_length=40, json_schema_extra=DURATION_SCHEMA)
    max_ttl: StrictStr = Field("2160h", max_length=40, json_schema_extra=DURATION_SCHEMA)
    ext_key_usage: list[ExtKeyUsage] = Field(default_factory=lambda: list[ExtKeyUsage](["server_auth"]),
                                             max_length=6)


class RolePut(RoleBody):
    name: StrictStr = Field(max_length=200)


class RoleRef(Contract):
    name: StrictStr = Field(max_length=200)


class RoleView(RoleBody):
    name: str
    created_at: datetime
    updated_at: datetime


# -- issuing -----------------------------------------------------------------------------------

class IssueBody(Contract):
    common_name: StrictStr = Field(min_length=1, max_length=1024)
    alt_names: list[StrictStr] = Field(default_factory=list, max_length=MAX_SANS)
    ip_sans: list[StrictStr] = Field(default_factory=list, max_length=MAX_SANS)
    ttl: StrictStr | None = Field(None, max_length=40, json_schema_extra=DURATION_SCHEMA)


class Issue(IssueBody):
    role: StrictStr = Field(max_length=200)


class SignBody(Contract):
    csr: StrictStr = Field(max_length=MAX_PEM, repr=False)
    ttl: StrictStr | None = Field(None, max_length=40, json_schema_extra=DURATION_SCHEMA)


class Sign(SignBody):
    role: StrictStr = Field(max_length=200)


class Signed(Contract):
    """``:sign``'s answer (and ``:issue``'s, with the key)."""

    serial: str
    certificate: str
    chain: list[str]
    ca_id: str
    expires_at: datetime


class Issued(Signed):
    #: PKCS#8 PEM, in this answer only: the service keeps no copy
    private_key: str = Field(repr=False)


# -- CSR approval --------------------------------------------------------------------------------

class CsrSubmit(Contract):
    csr: StrictStr = Field(max_length=MAX_PEM, repr=False)
    #: a role's name (the service answers invalid_role for another form)
    role: StrictStr = Field(max_length=200, json_schema_extra={"pattern": r"^[a-z0-9][a-z0-9_-]{0,62}$"})


class CsrView(Contract):
    id: str
    status: CsrStatus
    role: str
    subject: str
    sans: list[str]
    submitted_by: str | None
    created_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    #: once signed: the certificate
    serial: str | None
    certificate: str | None
    chain: list[str] | None


class CsrReject(Contract):
    id: StrictStr = Field(min_length=1, max_length=64)
    reason: StrictStr | None = Field(None, max_length=1000)


class RejectBody(Contract):
    reason: StrictStr | None = Field(None, max_length=1000)


class CsrList(PageRequest):
    status: CsrStatus | None = None


# -- certificates --------------------------------------------------------------------------------

class CertRef(Contract):
    serial: StrictStr = Field(pattern=SERIAL_PATTERN)


class CertView(Contract):
    serial: str
    #: the local CA that issued it; ``None`` for a certificate from an ACME CA (``acme_order_id``)
    ca_id: str | None
    acme_order_id: str | None = None
    role: str | None
    common_name: str
    sans: list[str]
    ip_sans: list[str]
    not_before: datetime
    not_after: datetime
    status: Literal["valid", "revoked", "expired"]
    revoked_at: datetime | None
    revocation_reason: str | None
    certificate: str


class CertList(PageRequest):
    ca_id: Annotated[StrictStr, Field(pattern=ID_PATTERN)] | None = None
    expiring_within: StrictStr | None = Field(None, max_length=40, json_schema_extra=DURATION_SCHEMA)


class RevokeBody(Contract):
    reason: StrictStr = Field("unspecified", max_length=40)


class Revoke(RevokeBody):
    serial: StrictStr = Field(pattern=SERIAL_PATTERN)


# -- trust anchors -------------------------------------------------------------------------------

class AnchorCreate(Contract):
    name: StrictStr = Field(pattern=NAME_PATTERN)
    certificate: StrictStr = Field(max_length=MAX_PEM)


class AnchorView(Contract):
    id: str
    name: str
    subject: str
    not_after: datetime
    fingerprint_sha256: str
    certificate: str
    created_at: datetime


SERVICE = "pki"
CA_CREATE = Method(SERVICE, "ca_create", CaCreate, CaView)
CA_GET = Method(SERVICE, "ca_get", Ref, CaView)
CA_LIST = Method(SERVICE, "ca_list", PageRequest, Page[CaView])
CA_CHAIN = Method(SERVICE, "ca_chain", Ref, Pem)
CA_DELETE = Method(SERVICE, "ca_delete", Ref, Empty)
CRL = Method(SERVICE, "crl", CrlRequest, Crl)
OCSP = Method(SERVICE, "ocsp", OcspQuery, OcspAnswer)
ROLE_PUT = Method(SERVICE, "role_put", RolePut, RoleView)
ROLE_GET = Method(SERVICE, "role_get", RoleRef, RoleView)
ROLE_LIST = Method(SERVICE, "role_list", PageRequest, Page[RoleView])
ROLE_DELETE = Method(SERVICE, "role_delete", RoleRef, Empty)
ISSUE = Method(SERVICE, "issue", Issue, Issued)
SIGN = Method(SERVICE, "sign", Sign, Signed)
CSR_SUBMIT = Method(SERVICE, "csr_submit", CsrSubmit, CsrView)
CSR_GET = Method(SERVICE, "csr_get", Ref, CsrView)
CSR_LIST = Method(SERVICE, "csr_list", CsrList, Page[CsrView])
CSR_APPROVE = Method(SERVICE, "csr_approve", Ref, CsrView)
CSR_REJECT = Method(SERVICE, "csr_reject", CsrReject, CsrView)
CERT_GET = Method(SERVICE, "cert_get", CertRef, CertView)
CERT_LIST = Method(SERVICE, "cert_list", CertList, Page[CertView])
REVOKE = Method(SERVICE, "revoke", Revoke, CertView)
ANCHOR_CREATE = Method(SERVICE, "anchor_create", AnchorCreate, AnchorView)
ANCHOR_GET = Method(SERVICE, "anchor_get", Ref, AnchorView)
ANCHOR_LIST = Method(SERVICE, "anchor_list", PageRequest, Page[AnchorView])
ANCHOR_DELETE = Method(SERVICE, "anchor_delete", Ref, Empty)
TRUST_BUNDLE = Method(SERVICE, "trust_bundle", Empty, Pem)


class PkiClient(ServiceClient):
    """The ``pki`` service, over the bus."""

    async def ca_create(self, ctx: RequestContext, request: CaCreate) -> CaView:
        return await self._call(CA_CREATE, ctx, request)

    async def ca_get(self, ctx: RequestContext, request: Ref) -> CaView:
        return await self._call(CA_GET, ctx, request)

    async def ca_list(self, ctx: RequestContext, request: PageRequest) -> Page[CaView]:
        return await self._call(CA_LIST, ctx, request)

    async def ca_chain(self, ctx: RequestContext, request: Ref) -> Pem:
        return await self._call(CA_CHAIN, ctx, request)

    async def ca_delete(self, ctx: RequestContext, request: Ref) -> None:
        await self._call(CA_DELETE, ctx, request)

    async def crl(self, ctx: RequestContext, request: CrlRequest) -> Crl:
        return await self._call(CRL, ctx, request)

    async def ocsp(self, ctx: RequestContext, request: OcspQuery) -> OcspAnswer:
        return await self._call(OCSP, ctx, request)

    async def role_put(self, ctx: RequestContext, request: RolePut) -> RoleView:
        return await self._call(ROLE_PUT, ctx, request)

    async def role_get(self, ctx: RequestContext, request: RoleRef) -> RoleView:
        return await self._call(ROLE_GET, ctx, request)

    async def role_list(self, ctx: RequestContext, request: PageRequest) -> Page[RoleView]:
        return await self._call(ROLE_LIST, ctx, request)

    async def role_delete(self, ctx: RequestContext, request: RoleRef) -> None:
        await self._call(ROLE_DELETE, ctx, request)

    async def issue(self, ctx: RequestContext, request: Issue) -> Issued:
        return await self._call(ISSUE, ctx, request)

    async def sign(self, ctx: RequestContext, request: Sign) -> Signed:
        return await self._call(SIGN, ctx, request)

    async def csr_submit(self, ctx: RequestContext, request: CsrSubmit) -> CsrView:
        return await self._call(CSR_SUBMIT, ctx, request)

    async def csr_get(self, ctx: RequestContext, request: Ref) -> CsrView:
        return await self._call(CSR_GET, ctx, request)

    async def csr_list(self, ctx: RequestContext, request: CsrList) -> Page[CsrView]:
        return await self._call(CSR_LIST, ctx, request)

    async def csr_approve(self, ctx: RequestContext, request: Ref) -> CsrView:
        return await self._call(CSR_APPROVE, ctx, request)

    async def csr_reject(self, ctx: RequestContext, request: CsrReject) -> CsrView:
        return await self._call(CSR_REJECT, ctx, request)

    async def cert_get(self, ctx: RequestContext, request: CertRef) -> CertView:
        return await self._call(CERT_GET, ctx, request)

    async def cert_list(self, ctx: RequestContext, request: CertList) -> Page[CertView]:
        return await self._call(CERT_LIST, ctx, request)

    async def revoke(self, ctx: RequestContext, request: Revoke) -> CertView:
        return await self._call(REVOKE, ctx, request)

    async def anchor_create(self, ctx: RequestContext, request: AnchorCreate) -> AnchorView:
        return await self._call(ANCHOR_CREATE, ctx, request)

    async def anchor_get(self, ctx: RequestContext, request: Ref) -> AnchorView:
        return await self._call(ANCHOR_GET, ctx, request)

    async def anchor_list(self, ctx: RequestContext, request: PageRequest) -> Page[AnchorView]:
        return await self._call(ANCHOR_LIST, ctx, request)

    async def anchor_delete(self, ctx: RequestContext, request: Ref) -> None:
        await self._call(ANCHOR_DELETE, ctx, request)

    async def trust_bundle(self, ctx: RequestContext) -> Pem:
        return await self._call(TRUST_BUNDLE, ctx, Empty())
