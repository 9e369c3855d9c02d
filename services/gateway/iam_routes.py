"""``/v1/identities``, ``/v1/tenants``, ``/v1/policies``, ``/v1/bindings`` and the token calls
of api.md §3–4. The gateway owns these: no bus hop, the repository directly."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from services.gateway import domain
from services.gateway.api_models import PageQuery
from services.gateway.handlers import IAM_REPO, KMS
from services.gateway.http import (
    AUDIT_FIELDS,
    GUARD,
    SIGNER,
    Route,
    context,
    json_response,
    principal,
    read_model,
    read_object,
)
from services.gateway.iam_domain import (
    PARTNER_FIELDS,
    BindingCreate,
    IdentityCreate,
    IdentityPatch,
    PolicyBody,
    RevokeRequest,
    TenantCreate,
    TenantPatch,
    TotpCode,
    binding_view,
    identity_view,
    new_totp_secret,
    policy_view,
    tenant_view,
)
from services.gateway.policy import parse_rules
from services.gateway.totp import check_totp, totp, totp_aad
from shared.contracts import parse
from shared.crypto import seal
from shared.cursors import CursorCodec
from shared.errors import (
    Forbidden,
    InsufficientScope,
    MfaRequired,
    TenantAccessDenied,
    TenantNotFound,
    ValidationError,
)

CURSORS = web.AppKey("iam_cursors", CursorCodec)
#: how recent a step-up must be to replace or remove one's own MFA enrolment
MFA_CHANGE_MAX_AGE = 300.0


def _tenant(request: web.Request) -> str:
    tenant = context(request).tenant_id
    assert tenant is not None
    return tenant


async def _page(request: web.Request, kind: str, fetch: Callable[[str | None, int], Any],
                key: Callable[[Any], str], view: Callable[[Any], dict[str, Any]],
                resource_of: Callable[[Any], str]) -> web.Response:
    """A page of a list, keeping only what the caller may ``list`` (``resource_of(row)``)."""
    page = parse(PageQuery, dict(request.query))
    rows, next_cursor = await request.app[CURSORS].page(
        _tenant(request), {"kind": kind, "limit": page.limit}, page.cursor, page.limit, fetch, key)
    rows = await request.app[GUARD].listable(request, principal(request), rows, resource_of)
    return json_response({"items": [view(r) for r in rows], "next_cursor": next_cursor})


def _no_escalation(request: web.Request, scopes: list[str] | None) -> None:
    extra = sorted(set(scopes or ()) - principal(request).scopes)
    if extra:
        raise InsufficientScope("you can't grant scopes your token doesn't hold", details={"scopes": extra})


async def _authorize(request: web.Request, resource: str, capability: str) -> None:
    await request.app[GUARD].authorize(request, principal(request), resource, capability)


# -- identities ----------------------------------------------------------------

async def create_identity(request: web.Request) -> web.Response:
    body = await read_model(request, IdentityCreate)
    await _authorize(request, "identities", "write")
    _no_escalation(request, body.allowed_scopes)
    tenant = _tenant(request)
    if body.partner_admin:
        await _partner_admin_grant(request, tenant)
    row: dict[str, Any] = {"id": domain.new_id("idn"), "tenant_id": tenant, "name": body.name, "kind": body.kind,
                           "allowed_scopes": body.allowed_scopes, "partner_admin": body.partner_admin}
    secret = None
    if body.kind == "service":
        secret = domain.new_client_secret()
        row.update(client_id=domain.new_id("cli"), secret_hash=domain.hash_client_secret(secret))
    else:
        row["password_hash"] = await domain.slow_hash(domain.hash_secret, body.password)
    created = identity_view(await request.app[IAM_REPO].create_identity(row))
    if secret:
        created["client_secret"] = secret  # shown once
    return json_response(created, status=201)


async def _partner_admin_grant(request: web.Request, tenant: str) -> None:
    if not await _caller_is_partner_admin(request):
        raise Forbidden("only a partner admin can make partner admins")
    target = await request.app[IAM_REPO].tenant(tenant)
    if target is None or target["kind"] != "partner":
        raise Forbidden("partner admins live in partner tenants")


async def _caller_is_partner_admin(request: web.Request) -> bool:
    me = await request.app[IAM_REPO].identity_any_tenant(principal(request).identity_id)
    return me is not None and bool(me["partner_admin"])


async def _holds_no_more(request: web.Request, target: Any) -> None:
    """Another identity may be changed only by a caller holding at least what it holds (api.md §3).

    Its ``allowed_scopes`` must be within the caller's token scopes, and a
    partner admin only by a partner admin: else a helpdesk identity with
    ``write`` on ``identities/**`` could rotate a root admin's secret and become it.
    """
    if target["id"] == principal(request).identity_id:
        return
    above = sorted(set(target["allowed_scopes"]) - principal(request).scopes)
    if above:
        raise Forbidden("that identity holds scopes your token doesn't", details={"scopes": above})
    if target["partner_admin"] and not await _caller_is_partner_admin(request):
        raise Forbidden("only a partner admin can change a partner admin")


async def get_identity(request: web.Request) -> web.Response:
    row = await request.app[IAM_REPO].identity(_tenant(request), request.match_info["id"])
    return json_response(identity_view(row))


async def list_identities(request: web.Request) -> web.Response:
    repo, tenant = request.app[IAM_REPO], _tenant(request)
    return await _page(request, "identities", lambda after, n: repo.list_identities(tenant, after, n),
                       lambda r: r["id"], identity_view, lambda r: f"identities/{r['id']}")


async def patch_identity(request: web.Request) -> web.Response:
    """Scopes, partner admin, password or client secret; lowering scopes or new credentials void its tokens."""
    body = await read_model(request, IdentityPatch)
    repo, tenant, identity_id = request.app[IAM_REPO], _tenant(request), request.match_info["id"]
    current = await repo.identity(tenant, identity_id)
    await _holds_no_more(request, current)
    _no_escalation(request, body.allowed_scopes)
    if body.partner_admin:
        await _partner_admin_grant(request, tenant)
    changes: dict[str, Any] = {"allowed_scopes": body.allowed_scopes, "partner_admin": body.partner_admin}
    if body.password is not None:
        if current["kind"] != "user":
            raise ValidationError("request validation failed", details={
                "fields": [{"field": "password", "message": "only user identities have a password"}]})
        changes["password_hash"] = await domain.slow_hash(domain.hash_secret, body.password)
    secret = None
    if body.rotate_client_secret:
        if current["kind"] != "service":
            raise ValidationError("request validation failed", details={
                "fields": [{"field": "rotate_client_secret", "message": "only service identities have one"}]})
        secret = domain.new_client_secret()
        changes["secret_hash"] = domain.hash_client_secret(secret)
    lowered = body.allowed_scopes is not None and bool(set(current["allowed_scopes"]) - set(body.allowed_scopes))
    void = lowered or "password_hash" in changes or "secret_hash" in changes
    row = await repo.update_identity(tenant, identity_id, changes, void_tokens=void,
                                     request_id=context(request).request_id)
    if void:  # here at once; other replicas on the token.revoked event
        request.app[GUARD].raise_floor(identity_id, row["token_generation"])
    updated = identity_view(row)
    if secret:
        updated["client_secret"] = secret
    return json_response(updated)


async def delete_identity(request: web.Request) -> web.Response:
    identity_id = request.match_info["id"]
    await _holds_no_more(request, await request.app[IAM_REPO].identity(_tenant(request), identity_id))
    await request.app[IAM_REPO].delete_identity(_tenant(request), identity_id, context(request).request_id)
    request.app[GUARD].revoked_identities.add(identity_id)
    return web.Response(status=204)


async def _mfa_change_allowed(request: web.Request, identity_id: str) -> Any:
    """Who may enrol, replace or remove an identity's MFA; the identity's row.

    One's own: a first enrolment with any token; replacing or removing it needs
    a step-up within the last 5 minutes (else a stolen password would be enough
    to swap the authenticator). Another's: the ``admin`` scope, ``write`` on
    ``identities/<id>``, and holding at least what it holds.
    """
    who = principal(request)
    row = None
    if identity_id != who.identity_id:
        if "admin" not in who.scopes:
            raise InsufficientScope("changing another identity's MFA needs the 'admin' scope",
                                    details={"required_scope": "admin"})
        await _authorize(request, f"identities/{identity_id}", "write")
        row = await request.app[IAM_REPO].identity(_tenant(request), identity_id)
        await _holds_no_more(request, row)
    row = row or await request.app[IAM_REPO].identity(_tenant(request), identity_id)
    if identity_id == who.identity_id and row["mfa_kek_id"] is not None \
            and not who.mfa_fresh(MFA_CHANGE_MAX_AGE):
        raise MfaRequired("changing an existing MFA enrolment needs a step-up in the last 5 minutes",
                          details={"max_age_seconds": int(MFA_CHANGE_MAX_AGE)})
    return row


async def enrol_totp(request: web.Request) -> web.Response:
    """Enrol TOTP (RFC 6238); the ``otpauth://`` URI is shown once. Replacing another's voids its tokens."""
    identity_id, who = request.match_info["id"], principal(request)
    row = await _mfa_change_allowed(request, identity_id)
    replacing_another = identity_id != who.identity_id and row["mfa_kek_id"] is not None
    secret = new_totp_secret()
    sealed = seal(request.app[KMS], secret, totp_aad(identity_id))
    await request.app[IAM_REPO].set_totp(_tenant(request), identity_id, sealed, void_tokens=replacing_another,
                                         request_id=context(request).request_id)
    if replacing_another:
        await _void_locally(request, identity_id)
    uri = totp(secret).get_provisioning_uri(row["name"], "Coffer")
    return json_response({"identity_id": identity_id, "otpauth_uri": uri}, status=201)


async def reset_totp(request: web.Request) -> web.Response:
    """Remove an identity's TOTP enrolment (an admin's reset, or one's own with a fresh step-up); voids its tokens."""
    identity_id = request.match_info["id"]
    await _mfa_change_allowed(request, identity_id)
    if await request.app[IAM_REPO].reset_totp(_tenant(request), identity_id, context(request).request_id):
        await _void_locally(request, identity_id)
    return web.Response(status=204)


async def _void_locally(request: web.Request, identity_id: str) -> None:
    """This replica refuses the identity's older tokens at once (the others on the token.revoked event)."""
    row = await request.app[IAM_REPO].identity_any_tenant(identity_id)
    if row is not None:
        request.app[GUARD].raise_floor(identity_id, row["token_generation"])


# -- tokens ----------------------------------------------------------------------

async def step_up(request: web.Request) -> web.Response:
    body = await read_model(request, TotpCode)
    who = principal(request)
    if not await check_totp(request.app[IAM_REPO], request.app[KMS], who.identity_id, body.totp_code):
        raise MfaRequired("TOTP code is not valid (or was already used)")
    token, ttl = request.app[SIGNER].issue(who.identity_id, who.tenant_id, tuple(sorted(who.scopes)),
                                           mfa_at=int(time.time()), generation=who.generation)
    return json_response({"access_token": token, "token_type": "Bearer", "expires_in": ttl,
                          "scope": " ".join(s for s in domain.ALL_SCOPES if s in who.scopes),
                          "tenant_id": who.tenant_id})


async def revoke(request: web.Request) -> web.Response:
    """Your own token by ``token``; any token of your tenant by ``token`` or ``jti`` as an admin.

    A ``jti`` revocation applies to tokens of the tenant the caller acts in (its
    own, or a child named with ``X-Tenant-ID``): naming another tenant's jti
    has no effect on that token.
    """
    body = await read_model(request, RevokeRequest)
    if body.token is not None:
        request[AUDIT_FIELDS] = {"token": body.token}
    who, signer = principal(request), request.app[SIGNER]
    if body.token is not None:
        claims = await signer.decode_own(body.token)
        jti, owner, tenant = str(claims["jti"]), str(claims["sub"]), str(claims["tid"])
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
    else:
        assert body.jti is not None
        jti, owner, tenant = body.jti, "", _tenant(request)
        expires = datetime.now(UTC) + timedelta(seconds=signer.ttl)
    if owner != who.identity_id:
        if "admin" not in who.scopes:
            raise InsufficientScope("revoking others' tokens needs the 'admin' scope")
        if tenant != _tenant(request):
            raise TenantAccessDenied("that token belongs to another tenant")
        await _authorize(request, "sys/tokens", "revoke")
    await request.app[IAM_REPO].revoke_token(tenant, jti, expires, context(request).request_id)
    request.app[GUARD].revoked_tokens.add((tenant, jti))  # here at once; other replicas through the event
    return web.Response(status=204)


async def rotate_signing_key(request: web.Request) -> web.Response:
    return json_response({"kid": await request.app[SIGNER].rotate()})


# -- tenants -----------------------------------------------------------------------

async def _reachable(request: web.Request, tenant_id: str) -> Any:
    """A tenant in the caller's reach (its own, or below it for partner admins)."""
    row = await request.app[IAM_REPO].tenant(tenant_id) if len(tenant_id) <= 64 else None
    if row is None:
        raise TenantNotFound(details={"tenant_id": tenant_id[:64]})
    if not await request.app[IAM_REPO].in_subtree(_tenant(request), tenant_id):
        raise TenantAccessDenied("that tenant is outside your reach")
    return row


async def create_tenant(request: web.Request) -> web.Response:
    body = await read_model(request, TenantCreate)
    await _authorize(request, "tenants", "write")
    await _partner_admin_grant(request, principal(request).tenant_id)
    parent = body.parent_id or _tenant(request)
    await _reachable(request, parent)
    row = await request.app[IAM_REPO].create_tenant({
        "id": domain.new_id("ten"), "name": body.name, "kind": body.kind, "parent_id": parent,
        "quotas": body.quotas.model_dump(exclude_none=True)})
    return json_response(tenant_view(row), status=201)


async def get_tenant(request: web.Request) -> web.Response:
    return json_response(tenant_view(await _reachable(request, request.match_info["id"])))


async def list_tenants(request: web.Request) -> web.Response:
    repo, root = request.app[IAM_REPO], _tenant(request)
    return await _page(request, "tenants", lambda after, n: repo.list_tenants(root, after, n),
                       lambda r: r["id"], tenant_view, lambda r: f"tenants/{r['id']}")


async def patch_tenant(request: web.Request) -> web.Response:
    """Merge the fields sent (RFC 7396); ``quotas`` and ``kind`` only by the partner above the tenant."""
    tenant_id = request.match_info["id"]
    raw = await read_object(request)
    await _reachable(request, tenant_id)
    touched = sorted(set(raw) & set(PARTNER_FIELDS))
    if touched and not await _above(request, tenant_id):  # before the fields are even validated
        raise Forbidden("a tenant's quotas and kind are set by the partner above it",
                        details={"fields": touched})
    body = parse(TenantPatch, raw)
    if body.kind == "standard" and await request.app[IAM_REPO].has_children(tenant_id):
        raise Forbidden("a tenant with child tenants stays a partner", details={"tenant_id": tenant_id})
    fields = body.model_dump(include={"name", "kind"}, exclude_unset=True)
    row = await request.app[IAM_REPO].update_tenant(tenant_id, fields, body.quota_changes())
    request.app[GUARD].forget_quotas(row["id"])
    return json_response(tenant_view(row))


async def _above(request: web.Request, tenant_id: str) -> bool:
    """Is the caller a partner admin of a tenant strictly above ``tenant_id``?"""
    home = principal(request).tenant_id
    return (tenant_id != home and await _caller_is_partner_admin(request)
            and await request.app[IAM_REPO].in_subtree(home, tenant_id))


async def delete_tenant(request: web.Request) -> web.Response:
    tenant_id = request.match_info["id"]
    await _reachable(request, tenant_id)
    if tenant_id == principal(request).tenant_id:
        raise Forbidden("you can't delete your own tenant")
    await request.app[IAM_REPO].delete_tenant(tenant_id, context(request).request_id)
    return web.Response(status=204)


# -- policies and bindings ---------------------------------------------------------

async def create_policy(request: web.Request) -> web.Response:
    body = await read_model(request, PolicyBody)
    if body.name is None:
        raise ValidationError("request validation failed",
                              details={"fields": [{"field": "name", "message": "Field required"}]})
    parse_rules(body.rules)
    await _authorize(request, f"policies/{body.name}", "write")
    row = await request.app[IAM_REPO].create_policy(_tenant(request), {
        "id": domain.new_id("pol"), "name": body.name, "description": body.description, "rules": body.rules},
        context(request).request_id)
    request.app[GUARD].forget_rules()  # here at once; other replicas on the policy.* event
    return json_response(policy_view(row), status=201)


async def get_policy(request: web.Request) -> web.Response:
    return json_response(policy_view(await request.app[IAM_REPO].policy(_tenant(request), request.match_info["name"])))


async def list_policies(request: web.Request) -> web.Response:
    repo, tenant = request.app[IAM_REPO], _tenant(request)
    return await _page(request, "policies", lambda after, n: repo.list_policies(tenant, after, n),
                       lambda r: r["name"], policy_view, lambda r: f"policies/{r['name']}")


async def put_policy(request: web.Request) -> web.Response:
    body = await read_model(request, PolicyBody)
    name = request.match_info["name"]
    if body.name is not None and body.name != name:
        raise ValidationError("request validation failed",
                              details={"fields": [{"field": "name", "message": "differs from the URL"}]})
    parse_rules(body.rules)
    row = await request.app[IAM_REPO].replace_policy(_tenant(request), name, body.description, body.rules,
                                                context(request).request_id)
    request.app[GUARD].forget_rules()
    return json_response(policy_view(row))


async def delete_policy(request: web.Request) -> web.Response:
    await request.app[IAM_REPO].delete_policy(_tenant(request), request.match_info["name"], context(request).request_id)
    request.app[GUARD].forget_rules()
    return web.Response(status=204)


async def create_binding(request: web.Request) -> web.Response:
    body = await read_model(request, BindingCreate)
    await _authorize(request, f"policies/{body.policy}", "manage")
    row = await request.app[IAM_REPO].create_binding(_tenant(request), domain.new_id("bnd"), body.policy,
                                                body.identity_id, context(request).request_id)
    request.app[GUARD].forget_rules()
    return json_response(binding_view(row), status=201)


async def get_binding(request: web.Request) -> web.Response:
    row = await request.app[IAM_REPO].binding(_tenant(request), request.match_info["id"])
    await _authorize(request, f"policies/{row['policy']}", "read")
    return json_response(binding_view(row))


async def list_bindings(request: web.Request) -> web.Response:
    repo, tenant = request.app[IAM_REPO], _tenant(request)
    return await _page(request, "bindings", lambda after, n: repo.list_bindings(tenant, after, n),
                       lambda r: r["id"], binding_view, lambda r: f"policies/{r['policy']}")


async def delete_binding(request: web.Request) -> web.Response:
    repo, tenant = request.app[IAM_REPO], _tenant(request)
    row = await repo.binding(tenant, request.match_info["id"])
    await _authorize(request, f"policies/{row['policy']}", "manage")
    await repo.delete_binding(tenant, row["id"], context(request).request_id)
    request.app[GUARD].forget_rules()
    return web.Response(status=204)


def _at(kind: str, key: str, capability: str) -> Callable[[web.Request], tuple[str, str]]:
    return lambda request: (f"{kind}/{request.match_info[key]}", capability)


_LIST = {"scope": "admin", "query": PageQuery, "errors": ("invalid_cursor",)}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/identities", create_identity, scope="admin", body=IdentityCreate, statuses=(201,),
          errors=("name_conflict", "forbidden")),
    Route("GET", "/v1/identities", list_identities, **_LIST),
    Route("GET", "/v1/identities/{id}", get_identity, scope="admin", target=_at("identities", "id", "read"),
          errors=("identity_not_found",)),
    Route("PATCH", "/v1/identities/{id}", patch_identity, scope="admin", target=_at("identities", "id", "write"),
          body=IdentityPatch, errors=("identity_not_found", "forbidden")),
    Route("DELETE", "/v1/identities/{id}", delete_identity, scope="admin",
          target=_at("identities", "id", "delete"), statuses=(204,), errors=("identity_not_found", "forbidden")),
    Route("POST", "/v1/identities/{id}/mfa/totp", enrol_totp, statuses=(201,),
          errors=("identity_not_found", "forbidden")),
    Route("DELETE", "/v1/identities/{id}/mfa/totp", reset_totp, statuses=(204,),
          errors=("identity_not_found", "forbidden")),
    Route("POST", "/v1/auth/mfa", step_up, body=TotpCode),
    Route("POST", "/v1/auth/revoke", revoke, body=RevokeRequest, statuses=(204,)),
    Route("POST", "/v1/auth/keys:rotate", rotate_signing_key, scope="admin", platform=True,
          target=lambda r: ("sys/keys", "rotate"), errors=("forbidden",)),
    Route("POST", "/v1/tenants", create_tenant, scope="admin", body=TenantCreate, statuses=(201,),
          errors=("name_conflict", "forbidden")),
    Route("GET", "/v1/tenants", list_tenants, **_LIST),
    Route("GET", "/v1/tenants/{id}", get_tenant, scope="admin", target=_at("tenants", "id", "read")),
    Route("PATCH", "/v1/tenants/{id}", patch_tenant, scope="admin", target=_at("tenants", "id", "write"),
          body=TenantPatch, errors=("name_conflict", "forbidden")),
    Route("DELETE", "/v1/tenants/{id}", delete_tenant, scope="admin", target=_at("tenants", "id", "delete"),
          statuses=(204,), errors=("forbidden",)),
    Route("POST", "/v1/policies", create_policy, scope="admin", body=PolicyBody, statuses=(201,),
          errors=("name_conflict", "invalid_policy", "invalid_glob")),
    Route("GET", "/v1/policies", list_policies, **_LIST),
    Route("GET", "/v1/policies/{name}", get_policy, scope="admin", target=_at("policies", "name", "read"),
          errors=("policy_not_found",)),
    Route("PUT", "/v1/policies/{name}", put_policy, scope="admin", target=_at("policies", "name", "write"),
          body=PolicyBody, errors=("policy_not_found", "invalid_policy", "invalid_glob")),
    Route("DELETE", "/v1/policies/{name}", delete_policy, scope="admin", target=_at("policies", "name", "delete"),
          statuses=(204,), errors=("policy_not_found", "policy_in_use")),
    Route("POST", "/v1/bindings", create_binding, scope="admin", body=BindingCreate, statuses=(201,),
          errors=("policy_not_found", "identity_not_found", "binding_conflict")),
    Route("GET", "/v1/bindings", list_bindings, **_LIST),
    Route("GET", "/v1/bindings/{id}", get_binding, scope="admin", errors=("binding_not_found",)),
    Route("DELETE", "/v1/bindings/{id}", delete_binding, scope="admin", statuses=(204,),
          errors=("binding_not_found",)),
)
