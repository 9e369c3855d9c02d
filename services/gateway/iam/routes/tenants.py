"""``/v1/tenants`` (api.md §3): a tree of tenants; quotas and kind are the partner's above."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.edge.routes import (
    PageQuery,
    Route,
    at,
    context,
    json_response,
    principal,
    read_model,
    read_object,
    tenant_of,
)
from services.gateway.iam import domain, tenant_keys
from services.gateway.iam.models import PARTNER_FIELDS, TenantCreate, TenantPatch, retention_seconds, tenant_view
from services.gateway.iam.routes import authorize, caller_is_partner_admin, listed
from services.gateway.iam.routes.identities import partner_admin_grant
from services.gateway.state import state
from shared.contracts import parse
from shared.errors import Forbidden, TenantAccessDenied, TenantNotFound


async def _reachable(request: web.Request, tenant_id: str) -> Any:
    """A tenant in the caller's reach (its own, or below it for partner admins)."""
    tenants = state(request).tenants
    row = await tenants.tenant(tenant_id) if len(tenant_id) <= 64 else None
    if row is None:
        raise TenantNotFound(details={"tenant_id": tenant_id[:64]})
    if not await tenants.in_subtree(tenant_of(request), tenant_id):
        raise TenantAccessDenied("that tenant is outside your reach")
    return row


async def _above(request: web.Request, tenant_id: str) -> bool:
    """Is the caller a partner admin of a tenant strictly above ``tenant_id``?"""
    home = principal(request).tenant_id
    return (tenant_id != home and await caller_is_partner_admin(request)
            and await state(request).tenants.in_subtree(home, tenant_id))


async def create_tenant(request: web.Request) -> web.Response:
    body = await read_model(request, TenantCreate)
    await authorize(request, "tenants", "write")
    await partner_admin_grant(request, principal(request).tenant_id)
    parent = body.parent_id or tenant_of(request)
    await _reachable(request, parent)
    retention_seconds(body.secret_retention)
    st, tenant_id = state(request), domain.new_id("ten")
    row = await st.tenants.create_tenant({
        "id": tenant_id, "name": body.name, "kind": body.kind, "parent_id": parent,
        "quotas": body.quotas.model_dump(exclude_none=True), "secret_retention": body.secret_retention,
        "require_mfa": body.require_mfa})
    if body.kms_key is not None:  # the row first: no service keeps keys of a tenant that was never made
        try:
            stored = await tenant_keys.set_kms_key(request, tenant_id, body.kms_key, None)
        except BaseException:
            await tenant_keys.shred(st, request, tenant_id, best_effort=True)
            await st.tenants.discard_new_tenant(tenant_id)
            raise
        row = await st.tenants.update_tenant(tenant_id, {"kms_key": stored}, None)
    return json_response(tenant_view(row), status=201)


async def get_tenant(request: web.Request) -> web.Response:
    return json_response(tenant_view(await _reachable(request, request.match_info["id"])))


async def list_tenants(request: web.Request) -> web.Response:
    repo, root = state(request).tenants, tenant_of(request)
    return await listed(request, "tenants", lambda after, n: repo.list_tenants(root, after, n),
                        lambda r: r["id"], tenant_view, lambda r: f"tenants/{r['id']}")


async def patch_tenant(request: web.Request) -> web.Response:
    """Merge the fields sent (RFC 7396); ``quotas``, ``kind`` and ``kms_key`` only by the partner above."""
    st, tenant_id = state(request), request.match_info["id"]
    raw = await read_object(request)
    await _reachable(request, tenant_id)
    touched = sorted(set(raw) & set(PARTNER_FIELDS))
    if touched and not await _above(request, tenant_id):  # before the fields are even validated
        raise Forbidden("a tenant's quotas, kind and KMS key are set by the partner above it",
                        details={"fields": touched})
    body = parse(TenantPatch, raw)
    if body.kind == "standard" and await st.tenants.has_children(tenant_id):
        raise Forbidden("a tenant with child tenants stays a partner", details={"tenant_id": tenant_id})
    fields = body.model_dump(include={"name", "kind", "secret_retention", "require_mfa", "kms_key"},
                             exclude_unset=True)
    retention_seconds(body.secret_retention)
    if "kms_key" in fields:
        current = await st.tenants.tenant(tenant_id)
        fields["kms_key"] = await tenant_keys.set_kms_key(request, tenant_id, body.kms_key,
                                                          current["kms_key"] if current else None)
    row = await st.tenants.update_tenant(tenant_id, fields, body.quota_changes())
    st.tenancy.quotas_changed(row["id"])
    return json_response(tenant_view(row))


async def delete_tenant(request: web.Request) -> web.Response:
    tenant_id = request.match_info["id"]
    await _reachable(request, tenant_id)
    if tenant_id == principal(request).tenant_id:
        raise Forbidden("you can't delete your own tenant")
    st, ctx = state(request), context(request)

    async def shred() -> None:
        """Its keys first, in every service's keyring (issue #29: a database copy can't open its values)."""
        await tenant_keys.shred(st, request, tenant_id)

    await st.tenants.delete_tenant(tenant_id, ctx.request_id, shred)
    return web.Response(status=204)


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/tenants", create_tenant, scope="admin", body=TenantCreate, statuses=(201,),
          errors=("name_conflict", "forbidden", "invalid_duration", "invalid_config")),
    Route("GET", "/v1/tenants", list_tenants, scope="admin", query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/tenants/{id}", get_tenant, scope="admin", target=at("tenants", "id", "read")),
    Route("PATCH", "/v1/tenants/{id}", patch_tenant, scope="admin", target=at("tenants", "id", "write"),
          body=TenantPatch, errors=("name_conflict", "forbidden", "invalid_duration", "invalid_config")),
    Route("DELETE", "/v1/tenants/{id}", delete_tenant, scope="admin", target=at("tenants", "id", "delete"),
          statuses=(204,), errors=("forbidden", "service_unavailable")),
)
