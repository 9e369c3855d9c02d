"""``/v1/pki``: the gateway's side of the PKI (api.md §6), but the public CRL and OCSP routes
(``pki_public``).

Scope ``pki``; policy resources ``pki/cas/<id>``, ``pki/roles/<name>``,
``pki/trust-anchors/<id>`` and ``pki/trust-bundle``. Where the body names
another resource the call acts through, the caller needs a capability there
too: a role's CA (``manage`` on ``pki/cas/<ca_id>``, or anyone who may manage
roles could point one at any CA), an intermediate's parent CA (``manage``), a
CSR's role (``write`` to submit). Certificates and CSRs are authorised once
fetched (their CA and role are in them): on a certificate, the capability on
its CA or on the role that issued it; on a CSR, on its role. Who may not even
``read`` one is told it does not exist, as for any id of another tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from services.gateway.edge.openapi import NAME
from services.gateway.edge.routes import (
    PageQuery,
    Route,
    context,
    model_response,
    query,
    read_model,
)
from services.gateway.forward.access import also, authorize, fetched, listed, listed_through
from services.gateway.state import state
from shared.contracts import parse
from shared.contracts.pki import (
    ID_PATTERN,
    AnchorCreate,
    CaCreate,
    CertList,
    CertRef,
    CertView,
    CsrList,
    CsrReject,
    CsrStatus,
    CsrSubmit,
    CsrView,
    Issue,
    IssueBody,
    PageRequest,
    PkiClient,
    Ref,
    RejectBody,
    Revoke,
    RevokeBody,
    RoleBody,
    RolePut,
    RoleRef,
    Sign,
    SignBody,
)
from shared.errors import CertificateNotFound, CsrNotFound, InvalidRequest

PEM_TYPE = "application/x-pem-file"


class CertQuery(PageQuery):
    ca_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    expiring_within: str | None = Field(None, max_length=40)


class CsrQuery(PageQuery):
    status: CsrStatus | None = None


def _pki(request: web.Request) -> PkiClient:
    return state(request).pki


def _page(request: web.Request) -> PageRequest:
    params = query(request, PageQuery)
    return PageRequest(limit=params.limit, cursor=params.cursor)


def _id(request: web.Request) -> Ref:
    return Ref(id=request.match_info["id"][:64])


def _pem(text: str) -> web.Response:
    return web.Response(text=text, content_type=PEM_TYPE)


# -- CAs ---------------------------------------------------------------------------------------

async def create_ca(request: web.Request) -> web.Response:
    body = await read_model(request, CaCreate)
    if body.parent_id is not None:  # signing with the parent is the parent's managers' to allow
        await also(request, f"pki/cas/{body.parent_id}", "manage")
    return model_response(await _pki(request).ca_create(context(request), body), status=201)


async def list_cas(request: web.Request) -> web.Response:
    page = await _pki(request).ca_list(context(request), _page(request))
    return await listed(request, page, lambda ca: f"pki/cas/{ca.id}")


async def get_ca(request: web.Request) -> web.Response:
    return model_response(await _pki(request).ca_get(context(request), _id(request)))


async def ca_chain(request: web.Request) -> web.Response:
    return _pem((await _pki(request).ca_chain(context(request), _id(request))).pem)


async def delete_ca(request: web.Request) -> web.Response:
    await _pki(request).ca_delete(context(request), _id(request))
    return web.Response(status=204)


# -- roles -------------------------------------------------------------------------------------

def _role_and_action(request: web.Request, actions: tuple[str, ...] = ()) -> tuple[str, str | None]:
    tail = request.match_info["tail"]
    name, sep, action = tail.partition(":")
    if sep and action not in actions:
        raise InvalidRequest(f"no route for {request.method} /v1/pki/roles/…:{action[:40]}")
    if "/" in name:
        raise InvalidRequest(f"no route for {request.method} /v1/pki/roles/{name[:60]}")
    return name[:200], action or None


async def put_role(request: web.Request) -> web.Response:
    name, _ = _role_and_action(request)
    body = await read_model(request, RoleBody)
    await also(request, f"pki/cas/{body.ca_id}", "manage")  # the CA the role will issue from
    role = await _pki(request).role_put(context(request), RolePut(**body.model_dump(), name=name))
    return model_response(role, status=201 if role.created_at == role.updated_at else 200)


async def list_roles(request: web.Request) -> web.Response:
    page = await _pki(request).role_list(context(request), _page(request))
    return await listed(request, page, lambda role: f"pki/roles/{role.name}")


async def get_role(request: web.Request) -> web.Response:
    name, _ = _role_and_action(request)
    return model_response(await _pki(request).role_get(context(request), RoleRef(name=name)))


async def delete_role(request: web.Request) -> web.Response:
    name, _ = _role_and_action(request)
    await _pki(request).role_delete(context(request), RoleRef(name=name))
    return web.Response(status=204)


async def role_action(request: web.Request) -> web.Response:
    """``:issue`` (a key made here, returned once) or ``:sign`` (the caller's CSR)."""
    name, action = _role_and_action(request, ("issue", "sign"))
    if action == "issue":
        body = await read_model(request, IssueBody)
        issued = await _pki(request).issue(context(request), Issue(**body.model_dump(), role=name))
        return model_response(issued, status=201)
    if action == "sign":
        sign = await read_model(request, SignBody)
        return model_response(await _pki(request).sign(context(request), Sign(**sign.model_dump(), role=name)),
                              status=201)
    raise InvalidRequest("no route for POST /v1/pki/roles/{name}: use :issue or :sign")


def _role_target(request: web.Request) -> tuple[str, str]:
    name, action = _role_and_action(request, ("issue", "sign"))
    capability = {"GET": "read", "PUT": "manage", "DELETE": "manage"}.get(request.method, action or "write")
    return f"pki/roles/{name}", capability


# -- CSRs and certificates: authorised once fetched ----------------------------------------------

def _cert_resources(cert: CertView) -> tuple[str, ...]:
    if cert.ca_id is None:  # from an ACME CA: the order's
        return (f"pki/acme/orders/{cert.acme_order_id}",)
    return (f"pki/cas/{cert.ca_id}",) + ((f"pki/roles/{cert.role}",) if cert.role else ())


async def submit_csr(request: web.Request) -> web.Response:
    body = await read_model(request, CsrSubmit)
    await authorize(request, f"pki/roles/{body.role[:200]}", "write")
    return model_response(await _pki(request).csr_submit(context(request), body), status=201)


async def list_csrs(request: web.Request) -> web.Response:
    params = query(request, CsrQuery)
    page = await _pki(request).csr_list(context(request), CsrList(
        limit=params.limit, cursor=params.cursor, status=params.status))
    return await listed(request, page, lambda csr: f"pki/roles/{csr.role}")


async def _csr(request: web.Request, capability: str) -> CsrView:
    csr = await _pki(request).csr_get(context(request), _id(request))
    hidden = CsrNotFound(f"CSR '{csr.id}' not found", details={"id": csr.id})
    await fetched(request, (f"pki/roles/{csr.role}",), capability, hidden)
    return csr


async def get_csr(request: web.Request) -> web.Response:
    return model_response(await _csr(request, "read"))


async def csr_action(request: web.Request) -> web.Response:
    """``:approve`` (signs it; not by its submitter) or ``:reject`` ``{reason?}``."""
    action = request.match_info["action"]
    await _csr(request, "approve")
    if action == "approve":
        return model_response(await _pki(request).csr_approve(context(request), _id(request)))
    body = await read_model(request, RejectBody)
    return model_response(await _pki(request).csr_reject(context(request), CsrReject(
        id=_id(request).id, reason=body.reason)))


async def _certificate(request: web.Request, capability: str) -> CertView:
    serial = request.match_info["serial"]
    cert = await _pki(request).cert_get(context(request), parse(CertRef, {"serial": serial[:64]}))
    hidden = CertificateNotFound(f"certificate '{cert.serial}' not found", details={"serial": cert.serial})
    await fetched(request, _cert_resources(cert), capability, hidden)
    return cert


async def get_certificate(request: web.Request) -> web.Response:
    return model_response(await _certificate(request, "read"))


async def list_certificates(request: web.Request) -> web.Response:
    params = query(request, CertQuery)
    page = await _pki(request).cert_list(context(request), CertList(
        limit=params.limit, cursor=params.cursor, ca_id=params.ca_id, expiring_within=params.expiring_within))
    return await listed_through(request, page, _cert_resources)  # through its CA or its role


async def revoke_certificate(request: web.Request) -> web.Response:
    cert = await _certificate(request, "revoke")
    body = await read_model(request, RevokeBody)
    return model_response(await _pki(request).revoke(context(request), Revoke(
        serial=cert.serial, reason=body.reason)))


# -- trust anchors -----------------------------------------------------------------------------

async def create_anchor(request: web.Request) -> web.Response:
    body = await read_model(request, AnchorCreate)
    return model_response(await _pki(request).anchor_create(context(request), body), status=201)


async def list_anchors(request: web.Request) -> web.Response:
    page = await _pki(request).anchor_list(context(request), _page(request))
    return await listed(request, page, lambda anchor: f"pki/trust-anchors/{anchor.id}")


async def get_anchor(request: web.Request) -> web.Response:
    return model_response(await _pki(request).anchor_get(context(request), _id(request)))


async def delete_anchor(request: web.Request) -> web.Response:
    await _pki(request).anchor_delete(context(request), _id(request))
    return web.Response(status=204)


async def trust_bundle(request: web.Request) -> web.Response:
    return _pem((await _pki(request).trust_bundle(context(request))).pem)


def _on(kind: str, capability: str, key: str | None = "id") -> Callable[[web.Request], tuple[str, str]]:
    return lambda request: (f"{kind}/{request.match_info[key][:64]}" if key else kind, capability)


_P: dict[str, Any] = {"scope": "pki"}
_NAMED: dict[str, Any] = {"params": {"name": {"type": "string", "pattern": NAME}}}
CA_NF = ("ca_not_found",)
ROLE = "/v1/pki/roles/{name}"
ISSUE_ERRORS = ("role_not_found", "ca_not_found", "invalid_role", "domain_not_allowed", "ttl_exceeds_max",
                "key_type_mismatch", "invalid_duration", "quota_exceeded", "encryption_error")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/pki/cas", create_ca, **_P, target=_on("pki/cas", "manage", None), body=CaCreate,
          statuses=(201,), errors=(*CA_NF, "name_conflict", "invalid_duration", "ttl_exceeds_max")),
    Route("GET", "/v1/pki/cas", list_cas, **_P, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/pki/cas/{id}", get_ca, **_P, target=_on("pki/cas", "read"), errors=CA_NF),
    Route("GET", "/v1/pki/cas/{id}/chain", ca_chain, **_P, target=_on("pki/cas", "read"), errors=CA_NF,
          media=PEM_TYPE),
    Route("DELETE", "/v1/pki/cas/{id}", delete_ca, **_P, target=_on("pki/cas", "manage"), statuses=(204,),
          errors=(*CA_NF, "ca_has_certificates")),
    Route("GET", "/v1/pki/roles", list_roles, **_P, query=PageQuery, errors=("invalid_cursor",)),
    Route("PUT", "/v1/pki/roles/{tail}", put_role, **_P, **_NAMED, target=_role_target, body=RoleBody,
          statuses=(200, 201), doc_paths=(ROLE,), errors=(*CA_NF, "invalid_role", "invalid_duration")),
    Route("GET", "/v1/pki/roles/{tail}", get_role, **_P, **_NAMED, target=_role_target, doc_paths=(ROLE,),
          errors=("role_not_found", "invalid_role")),
    Route("DELETE", "/v1/pki/roles/{tail}", delete_role, **_P, **_NAMED, target=_role_target, statuses=(204,),
          doc_paths=(ROLE,), errors=("role_not_found", "invalid_role")),
    Route("POST", "/v1/pki/roles/{tail}", role_action, **_P, **_NAMED, target=_role_target, body=IssueBody,
          statuses=(201,), doc_paths=(ROLE + ":issue", ROLE + ":sign"), doc_bodies={ROLE + ":sign": SignBody},
          errors=(*ISSUE_ERRORS, "csr_invalid")),
    Route("POST", "/v1/pki/csrs", submit_csr, **_P, body=CsrSubmit, statuses=(201,),
          errors=("role_not_found", "invalid_role", "csr_invalid", "domain_not_allowed", "key_type_mismatch")),
    Route("GET", "/v1/pki/csrs", list_csrs, **_P, query=CsrQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/pki/csrs/{id}", get_csr, **_P, errors=("csr_not_found",)),
    Route("POST", "/v1/pki/csrs/{id}:{action:(approve|reject)}", csr_action, **_P, statuses=(200,),
          doc_paths=("/v1/pki/csrs/{id}:approve", "/v1/pki/csrs/{id}:reject"),
          errors=("csr_not_found", "csr_already_processed", "forbidden", *ISSUE_ERRORS)),  # forbidden: one's own
    Route("GET", "/v1/pki/certificates", list_certificates, **_P, query=CertQuery,
          errors=("invalid_cursor", "invalid_duration")),
    Route("GET", "/v1/pki/certificates/{serial}", get_certificate, **_P,
          errors=("certificate_not_found", "validation_error")),
    Route("POST", "/v1/pki/certificates/{serial}:revoke", revoke_certificate, **_P, body=RevokeBody,
          errors=("certificate_not_found", "validation_error")),
    Route("POST", "/v1/pki/trust-anchors", create_anchor, **_P, target=_on("pki/trust-anchors", "manage", None),
          body=AnchorCreate, statuses=(201,), errors=("name_conflict",)),
    Route("GET", "/v1/pki/trust-anchors", list_anchors, **_P, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/pki/trust-anchors/{id}", get_anchor, **_P, target=_on("pki/trust-anchors", "read"),
          errors=("trust_anchor_not_found",)),
    Route("DELETE", "/v1/pki/trust-anchors/{id}", delete_anchor, **_P, target=_on("pki/trust-anchors", "manage"),
          statuses=(204,), errors=("trust_anchor_not_found",)),
    Route("GET", "/v1/pki/trust-bundle", trust_bundle, **_P, target=_on("pki/trust-bundle", "read", None),
          media=PEM_TYPE),
)
