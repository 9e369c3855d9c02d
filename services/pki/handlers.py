"""RPC handlers of the pki service: a contract model in, the PKI's work done, a contract model out.

Every method but ``crl`` and ``ocsp`` acts in the request's tenant (rows of
another tenant are not found); those two are public, as relying parties
call them without a token.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from services.pki.authority import Authority
from services.pki.certs import REASONS
from services.pki.inputs import parse_anchor
from services.pki.names import normalize_domains
from services.pki.repository import PkiRepository, Row
from shared.context import RequestContext
from shared.contracts import Empty, from_row, handles
from shared.contracts import pki as contract
from shared.contracts.pki import (
    AnchorCreate,
    AnchorView,
    CaCreate,
    CaView,
    CertList,
    CertRef,
    CertView,
    Crl,
    CrlRequest,
    CsrList,
    CsrReject,
    CsrSubmit,
    CsrView,
    Issue,
    Issued,
    OcspAnswer,
    OcspQuery,
    Page,
    PageRequest,
    Pem,
    Ref,
    Revoke,
    RoleBody,
    RolePut,
    RoleRef,
    RoleView,
    Sign,
    Signed,
)
from shared.cursors import CursorCodec
from shared.durations import parse_duration
from shared.errors import CaNotFound, CsrAlreadyProcessed, Forbidden, InvalidRole, ValidationError

ROLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: RFC 5280's spelling of the reasons (``keyCompromise``), accepted beside the API's
_RFC_REASONS = {"keycompromise": "key_compromise", "cacompromise": "ca_compromise",
                "affiliationchanged": "affiliation_changed", "cessationofoperation": "cessation_of_operation",
                "privilegewithdrawn": "privilege_withdrawn", "aacompromise": "aa_compromise"}


def role_name(name: str) -> str:
    if not ROLE_NAME.fullmatch(name):
        raise InvalidRole("a role name is 1-63 of a-z, 0-9, _ and -, starting with a letter or digit",
                          details={"name": name[:80]})
    return name


def reason_name(reason: str) -> str:
    name = _RFC_REASONS.get(reason.lower(), reason)
    if name not in REASONS:
        raise ValidationError.on("reason", f"one of {', '.join(REASONS)} (RFC 5280 reason names)")
    return name


def serial_of(text: str) -> str:
    """A serial as stored: lower-case hex without leading zeros."""
    return format(int(text, 16), "x")


def _ca_view(row: Row) -> CaView:
    return from_row(CaView, row)


def _role_view(row: Row) -> RoleView:
    return RoleView.model_validate({**row["spec"], "ca_id": row["ca_id"], "name": row["name"],
                                    "created_at": row["created_at"], "updated_at": row["updated_at"]})


def _role_body(row: Row) -> RoleBody:
    return RoleBody.model_validate({**row["spec"], "ca_id": row["ca_id"]})


def _cert_view(row: Row) -> CertView:
    if row["revoked_at"] is not None:
        status = "revoked"
    elif row["not_after"] <= datetime.now(UTC):
        status = "expired"
    else:
        status = "valid"
    return from_row(CertView, row, status=status)


class PkiHandlers:
    def __init__(self, repo: PkiRepository, authority: Authority, cursors: CursorCodec) -> None:
        self.repo = repo
        self.authority = authority
        self.cursors = cursors

    async def _page(self, ctx: RequestContext, kind: str, req: PageRequest, fetch: Any,
                    key: Any) -> tuple[list[Row], str | None]:
        tenant = ctx.require_tenant()
        return await self.cursors.page(tenant, {"kind": kind, "limit": req.limit}, req.cursor, req.limit,
                                       lambda after, n: fetch(tenant, after, n), key)

    # -- CAs -----------------------------------------------------------------------------------

    @handles(contract.CA_CREATE)
    async def ca_create(self, req: CaCreate, ctx: RequestContext) -> CaView:
        return _ca_view(await self.authority.create_ca(ctx.require_tenant(), ctx.request_id, req))

    @handles(contract.CA_GET)
    async def ca_get(self, req: Ref, ctx: RequestContext) -> CaView:
        return _ca_view(await self.repo.ca(ctx.require_tenant(), req.id))

    @handles(contract.CA_LIST)
    async def ca_list(self, req: PageRequest, ctx: RequestContext) -> Page[CaView]:
        rows, cursor = await self._page(ctx, "cas", req, self.repo.list_cas, lambda r: r["id"])
        return Page[CaView](items=[_ca_view(r) for r in rows], next_cursor=cursor)

    @handles(contract.CA_CHAIN)
    async def ca_chain(self, req: Ref, ctx: RequestContext) -> Pem:
        return Pem(pem="".join(await self.repo.chain(ctx.require_tenant(), req.id)))

    @handles(contract.CA_DELETE)
    async def ca_delete(self, req: Ref, ctx: RequestContext) -> None:
        await self.repo.delete_ca(ctx.require_tenant(), req.id)

    @handles(contract.CRL)
    async def crl(self, req: CrlRequest, ctx: RequestContext) -> Crl:
        row = await self.repo.crl(req.id)
        if row is None or row["crl"] is None:
            raise CaNotFound(f"CA '{req.id}' not found", details={"id": req.id})
        return Crl(der=base64.b64encode(row["crl"]).decode(), next_update=row["crl_next_update"])

    @handles(contract.OCSP)
    async def ocsp(self, req: OcspQuery, ctx: RequestContext) -> OcspAnswer:
        return OcspAnswer(response=base64.b64encode(await self.authority.ocsp(req.request)).decode())

    # -- roles ---------------------------------------------------------------------------------

    @handles(contract.ROLE_PUT)
    async def role_put(self, req: RolePut, ctx: RequestContext) -> RoleView:
        tenant, name = ctx.require_tenant(), role_name(req.name)
        await self.repo.ca(tenant, req.ca_id)  # ca_not_found
        ttl, max_ttl = parse_duration(req.ttl, field="ttl"), parse_duration(req.max_ttl, field="max_ttl")
        if ttl > max_ttl:
            raise ValidationError.on("ttl", "longer than max_ttl")
        spec = req.model_dump(exclude={"name", "ca_id"})
        spec["allowed_domains"] = list(normalize_domains(req.allowed_domains))
        spec["ext_key_usage"] = list(dict.fromkeys(req.ext_key_usage))
        return _role_view(await self.repo.put_role(tenant, name, req.ca_id, spec))

    @handles(contract.ROLE_GET)
    async def role_get(self, req: RoleRef, ctx: RequestContext) -> RoleView:
        return _role_view(await self.repo.role(ctx.require_tenant(), role_name(req.name)))

    @handles(contract.ROLE_LIST)
    async def role_list(self, req: PageRequest, ctx: RequestContext) -> Page[RoleView]:
        rows, cursor = await self._page(ctx, "roles", req, self.repo.list_roles, lambda r: r["name"])
        return Page[RoleView](items=[_role_view(r) for r in rows], next_cursor=cursor)

    @handles(contract.ROLE_DELETE)
    async def role_delete(self, req: RoleRef, ctx: RequestContext) -> None:
        await self.repo.delete_role(ctx.require_tenant(), role_name(req.name))

    # -- issuing -------------------------------------------------------------------------------

    async def _signed(self, tenant: str, record: dict[str, Any]) -> dict[str, Any]:
        return {"serial": record["serial"], "certificate": record["certificate"], "ca_id": record["ca_id"],
                "expires_at": record["not_after"], "chain": await self.authority.chain(tenant, record["ca_id"])}

    @handles(contract.ISSUE)
    async def issue(self, req: Issue, ctx: RequestContext) -> Issued:
        tenant, name = ctx.require_tenant(), role_name(req.role)
        role = _role_body(await self.repo.role(tenant, name))
        record, key_pem = await self.authority.issue(
            tenant, ctx.request_id, name, role, req.common_name, req.alt_names, req.ip_sans, req.ttl,
            ctx.quota("max_certificates"))
        return Issued(**await self._signed(tenant, record), private_key=key_pem)

    @handles(contract.SIGN)
    async def sign(self, req: Sign, ctx: RequestContext) -> Signed:
        tenant, name = ctx.require_tenant(), role_name(req.role)
        role = _role_body(await self.repo.role(tenant, name))
        record = await self.authority.sign(tenant, name, role, req.csr, req.ttl)
        await self.repo.insert_certificate(record, ctx.request_id, ctx.quota("max_certificates"))
        return Signed(**await self._signed(tenant, record))

    # -- CSR approval ----------------------------------------------------------------------------

    async def _csr_view(self, row: Row, with_certificate: bool = True) -> CsrView:
        extra: dict[str, Any] = {"certificate": None, "chain": None}
        if with_certificate and row["serial"] is not None:
            cert = await self.repo.certificate(row["tenant_id"], row["serial"])
            extra = {"certificate": cert["certificate"],
                     "chain": await self.authority.chain(row["tenant_id"], cert["ca_id"])}
        return from_row(CsrView, row, sans=list(row["sans"]), **extra)

    @handles(contract.CSR_SUBMIT)
    async def csr_submit(self, req: CsrSubmit, ctx: RequestContext) -> CsrView:
        tenant, name = ctx.require_tenant(), role_name(req.role)
        role = _role_body(await self.repo.role(tenant, name))
        csr, names = await self.authority.check_csr(role, req.csr)
        row = await self.repo.insert_csr({
            "id": "csr_" + secrets.token_hex(10), "tenant_id": tenant, "role": name, "csr": req.csr,
            "subject": names.common_name, "sans": [*names.dns, *(str(ip) for ip in names.ips)],
            "submitted_by": ctx.identity_id}, ctx.request_id)
        return await self._csr_view(row)

    @handles(contract.CSR_GET)
    async def csr_get(self, req: Ref, ctx: RequestContext) -> CsrView:
        return await self._csr_view(await self.repo.csr(ctx.require_tenant(), req.id))

    @handles(contract.CSR_LIST)
    async def csr_list(self, req: CsrList, ctx: RequestContext) -> Page[CsrView]:
        tenant = ctx.require_tenant()
        rows, cursor = await self.cursors.page(
            tenant, {"kind": "csrs", "limit": req.limit, "status": req.status}, req.cursor, req.limit,
            lambda after, n: self.repo.list_csrs(tenant, req.status, after, n), lambda r: r["id"])
        return Page[CsrView](items=[await self._csr_view(r, with_certificate=False) for r in rows],
                             next_cursor=cursor)

    @handles(contract.CSR_APPROVE)
    async def csr_approve(self, req: Ref, ctx: RequestContext) -> CsrView:
        tenant = ctx.require_tenant()
        row = await self.repo.csr(tenant, req.id)
        if ctx.identity_id is None or row["submitted_by"] == ctx.identity_id:
            raise Forbidden("the submitter of a CSR can't approve it", details={"id": req.id})
        if row["status"] != "pending":  # checked again, under a lock, when the decision is written
            raise CsrAlreadyProcessed(f"the CSR was already {row['status']}",
                                      details={"id": req.id, "status": row["status"]})
        role = _role_body(await self.repo.role(tenant, row["role"]))  # the role's rules as they are now
        record = await self.authority.sign(tenant, row["role"], role, row["csr"], None)
        decided = await self.repo.decide_csr(tenant, req.id, ctx.identity_id, ctx.request_id, signed=record,
                                             max_certificates=ctx.quota("max_certificates"))
        return await self._csr_view(decided)

    @handles(contract.CSR_REJECT)
    async def csr_reject(self, req: CsrReject, ctx: RequestContext) -> CsrView:
        tenant = ctx.require_tenant()
        decided = await self.repo.decide_csr(tenant, req.id, ctx.identity_id, ctx.request_id, reason=req.reason)
        return await self._csr_view(decided)

    # -- certificates ----------------------------------------------------------------------------

    @handles(contract.CERT_GET)
    async def cert_get(self, req: CertRef, ctx: RequestContext) -> CertView:
        return _cert_view(await self.repo.certificate(ctx.require_tenant(), serial_of(req.serial)))

    @handles(contract.CERT_LIST)
    async def cert_list(self, req: CertList, ctx: RequestContext) -> Page[CertView]:
        tenant = ctx.require_tenant()
        before = None
        if req.expiring_within is not None:
            within = parse_duration(req.expiring_within, field="expiring_within")
            before = datetime.now(UTC) + timedelta(seconds=within)
        rows, cursor = await self.cursors.page(
            tenant, {"kind": "certificates", "limit": req.limit, "ca_id": req.ca_id,
                     "expiring_within": req.expiring_within}, req.cursor, req.limit,
            lambda after, n: self.repo.list_certificates(tenant, req.ca_id, before, after, n),
            lambda r: r["serial"])
        return Page[CertView](items=[_cert_view(r) for r in rows], next_cursor=cursor)

    @handles(contract.REVOKE)
    async def revoke(self, req: Revoke, ctx: RequestContext) -> CertView:
        row = await self.repo.revoke(ctx.require_tenant(), serial_of(req.serial), reason_name(req.reason),
                                     ctx.request_id, self.authority.sign_crl)
        return _cert_view(row)

    # -- trust anchors ---------------------------------------------------------------------------

    @handles(contract.ANCHOR_CREATE)
    async def anchor_create(self, req: AnchorCreate, ctx: RequestContext) -> AnchorView:
        anchor = parse_anchor(req.certificate)
        row = await self.repo.insert_anchor({
            "id": "ta_" + secrets.token_hex(10), "tenant_id": ctx.require_tenant(), "name": req.name,
            "subject": anchor.subject, "not_after": anchor.not_after,
            "fingerprint_sha256": anchor.fingerprint_sha256, "certificate": anchor.certificate})
        return from_row(AnchorView, row)

    @handles(contract.ANCHOR_GET)
    async def anchor_get(self, req: Ref, ctx: RequestContext) -> AnchorView:
        return from_row(AnchorView, await self.repo.anchor(ctx.require_tenant(), req.id))

    @handles(contract.ANCHOR_LIST)
    async def anchor_list(self, req: PageRequest, ctx: RequestContext) -> Page[AnchorView]:
        rows, cursor = await self._page(ctx, "anchors", req, self.repo.list_anchors, lambda r: r["id"])
        return Page[AnchorView](items=[from_row(AnchorView, r) for r in rows], next_cursor=cursor)

    @handles(contract.ANCHOR_DELETE)
    async def anchor_delete(self, req: Ref, ctx: RequestContext) -> None:
        await self.repo.delete_anchor(ctx.require_tenant(), req.id)

    @handles(contract.TRUST_BUNDLE)
    async def trust_bundle(self, req: Empty, ctx: RequestContext) -> Pem:
        return Pem(pem="".join(await self.repo.trust_bundle(ctx.require_tenant())))
