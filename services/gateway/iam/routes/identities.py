"""``/v1/identities`` and their MFA (api.md §3): who may change whom, and voiding tokens at once."""

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
    tenant_of,
)
from services.gateway.iam import domain
from services.gateway.iam.models import IdentityCreate, IdentityPatch, identity_view, new_totp_secret
from services.gateway.iam.routes import authorize, caller_is_partner_admin, listed
from services.gateway.iam.totp import totp, totp_aad
from services.gateway.state import state
from shared.crypto import seal
from shared.errors import Forbidden, InsufficientScope, MfaRequired, ValidationError

#: how recent a step-up must be to replace or remove one's own MFA enrolment
MFA_CHANGE_MAX_AGE = 300.0


def _no_escalation(request: web.Request, scopes: list[str] | None) -> None:
    extra = sorted(set(scopes or ()) - principal(request).scopes)
    if extra:
        raise InsufficientScope("you can't grant scopes your token doesn't hold", details={"scopes": extra})


async def partner_admin_grant(request: web.Request, tenant: str) -> None:
    if not await caller_is_partner_admin(request):
        raise Forbidden("only a partner admin can make partner admins")
    target = await state(request).tenants.tenant(tenant)
    if target is None or target["kind"] != "partner":
        raise Forbidden("partner admins live in partner tenants")


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
    if target["partner_admin"] and not await caller_is_partner_admin(request):
        raise Forbidden("only a partner admin can change a partner admin")


async def create_identity(request: web.Request) -> web.Response:
    body = await read_model(request, IdentityCreate)
    await authorize(request, "identities", "write")
    _no_escalation(request, body.allowed_scopes)
    tenant = tenant_of(request)
    if body.partner_admin:
        await partner_admin_grant(request, tenant)
    row: dict[str, Any] = {"id": domain.new_id("idn"), "tenant_id": tenant, "name": body.name, "kind": body.kind,
                           "allowed_scopes": body.allowed_scopes, "partner_admin": body.partner_admin,
                           "require_mfa": body.require_mfa}
    secret = None
    if body.kind == "service":
        secret = domain.new_client_secret()
        row.update(client_id=domain.new_id("cli"), secret_hash=domain.hash_client_secret(secret))
    else:
        assert body.password is not None
        row["password_hash"] = await domain.hash_password(body.password)
    created = identity_view(await state(request).identities.create_identity(row))
    if secret:
        created["client_secret"] = secret  # shown once
    return json_response(created, status=201)


async def get_identity(request: web.Request) -> web.Response:
    return json_response(identity_view(await state(request).identities.identity(tenant_of(request),
                                                                                 request.match_info["id"])))


async def list_identities(request: web.Request) -> web.Response:
    repo, tenant = state(request).identities, tenant_of(request)
    return await listed(request, "identities", lambda after, n: repo.list_identities(tenant, after, n),
                        lambda r: r["id"], identity_view, lambda r: f"identities/{r['id']}")


async def patch_identity(request: web.Request) -> web.Response:
    """Scopes, partner admin, password or client secret; lowering scopes or new credentials void its tokens."""
    body = await read_model(request, IdentityPatch)
    st, tenant, identity_id = state(request), tenant_of(request), request.match_info["id"]
    current = await st.identities.identity(tenant, identity_id)
    await _holds_no_more(request, current)
    _no_escalation(request, body.allowed_scopes)
    if body.partner_admin:
        await partner_admin_grant(request, tenant)
    await _require_mfa_change(request, current, body.require_mfa)
    changes: dict[str, Any] = {"allowed_scopes": body.allowed_scopes, "partner_admin": body.partner_admin,
                               "require_mfa": body.require_mfa}
    if body.password is not None:
        if current["kind"] != "user":
            raise ValidationError.on("password", "only user identities have a password")
        changes["password_hash"] = await domain.hash_password(body.password)
    secret = None
    if body.rotate_client_secret:
        if current["kind"] != "service":
            raise ValidationError.on("rotate_client_secret", "only service identities have one")
        secret = domain.new_client_secret()
        changes["secret_hash"] = domain.hash_client_secret(secret)
    lowered = body.allowed_scopes is not None and bool(set(current["allowed_scopes"]) - set(body.allowed_scopes))
    void = lowered or "password_hash" in changes or "secret_hash" in changes
    row = await st.identities.update_identity(tenant, identity_id, changes, void_tokens=void,
                                              request_id=context(request).request_id)
    if void:  # here at once; other replicas on the token.revoked event
        st.revocations.tokens_voided(identity_id, row["token_generation"])
    updated = identity_view(row)
    if secret:
        updated["client_secret"] = secret
    return json_response(updated)


async def _require_mfa_change(request: web.Request, current: Any, require: bool | None) -> None:
    """Who may set an identity's ``require_mfa``: whoever may change the identity, but

    - only users have it (service identities log in with a client secret, no code);
    - it can't be set to false while the identity's tenant requires MFA (the tenant's rule holds for all);
    - lifting one's own needs a step-up in the last 5 minutes, like changing one's own enrolment (a stolen
      password alone must not be enough to drop the second factor).
    """
    if require is None:
        return
    if require and current["kind"] != "user":
        raise ValidationError.on("require_mfa", "only user identities log in with a TOTP code")
    if require:
        return
    tenant = await state(request).tenants.tenant(current["tenant_id"])
    if tenant is not None and tenant["require_mfa"]:
        raise Forbidden("the tenant requires MFA at login of every user: lift it on the tenant",
                        details={"field": "require_mfa", "rule": "tenant_requires_mfa"})
    own = current["id"] == principal(request).identity_id
    if own and current["require_mfa"] and not principal(request).mfa_fresh(MFA_CHANGE_MAX_AGE):
        raise MfaRequired("lifting your own require_mfa needs a step-up in the last 5 minutes",
                          details={"max_age_seconds": int(MFA_CHANGE_MAX_AGE)})


async def delete_identity(request: web.Request) -> web.Response:
    st, identity_id = state(request), request.match_info["id"]
    await _holds_no_more(request, await st.identities.identity(tenant_of(request), identity_id))
    await st.identities.delete_identity(tenant_of(request), identity_id, context(request).request_id)
    st.revocations.identity_deleted(identity_id)
    return web.Response(status=204)


async def _mfa_change_allowed(request: web.Request, identity_id: str) -> Any:
    """Who may enrol, replace or remove an identity's MFA; the identity's row.

    One's own: a first enrolment with any token; replacing or removing it needs
    a step-up within the last 5 minutes (else a stolen password would be enough
    to swap the authenticator). Another's (a reset only: ``enrol_totp`` refuses
    another's before this): the ``admin`` scope, ``write`` on
    ``identities/<id>``, and holding at least what it holds.
    """
    who, identities = principal(request), state(request).identities
    if identity_id != who.identity_id:
        if "admin" not in who.scopes:
            raise InsufficientScope("changing another identity's MFA needs the 'admin' scope",
                                    details={"required_scope": "admin"})
        await authorize(request, f"identities/{identity_id}", "write")
        row = await identities.identity(tenant_of(request), identity_id)
        await _holds_no_more(request, row)
        return row
    row = await identities.identity(tenant_of(request), identity_id)
    if row["mfa_kek_id"] is not None and not who.mfa_fresh(MFA_CHANGE_MAX_AGE):
        raise MfaRequired("changing an existing MFA enrolment needs a step-up in the last 5 minutes",
                          details={"max_age_seconds": int(MFA_CHANGE_MAX_AGE)})
    return row


#: ``details.rule`` of an enrolment for another identity
OWN_ENROLMENT_ONLY = "own_enrolment_only"


async def enrol_totp(request: web.Request) -> web.Response:
    """Enrol TOTP (RFC 6238) for oneself; the ``otpauth://`` URI is shown once, to its owner only.

    Nobody enrols another identity's factor, whatever it holds (api.md §3, no takeover): whoever saw the URI
    could make that identity's codes. An admin resets another's factor (DELETE) and its owner enrols again.
    Refused before the identity is looked up, so the answer is the same whether it exists or not.
    """
    st, identity_id = state(request), request.match_info["id"]
    if identity_id != principal(request).identity_id:
        raise Forbidden("a TOTP factor is enrolled only by its own identity, which alone sees the otpauth:// URI:"
                        " an admin may reset another identity's factor (DELETE), and that identity enrols again",
                        details={"rule": OWN_ENROLMENT_ONLY})
    row = await _mfa_change_allowed(request, identity_id)
    secret = new_totp_secret()
    sealed = seal(st.kms.tenant(tenant_of(request)), secret, totp_aad(identity_id))
    await st.identities.set_totp(tenant_of(request), identity_id, sealed, void_tokens=False,
                                 request_id=context(request).request_id)
    uri = totp(secret).get_provisioning_uri(row["name"], "Coffer")
    return json_response({"identity_id": identity_id, "otpauth_uri": uri}, status=201)


async def reset_totp(request: web.Request) -> web.Response:
    """Remove an identity's TOTP enrolment (an admin's reset, or one's own with a fresh step-up); voids its tokens."""
    st, identity_id = state(request), request.match_info["id"]
    await _mfa_change_allowed(request, identity_id)
    generation = await st.identities.reset_totp(tenant_of(request), identity_id, context(request).request_id)
    if generation is not None:
        st.revocations.tokens_voided(identity_id, generation)
    return web.Response(status=204)


_LIST = {"scope": "admin", "query": PageQuery, "errors": ("invalid_cursor",)}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/identities", create_identity, scope="admin", body=IdentityCreate, statuses=(201,),
          errors=("name_conflict", "forbidden")),
    Route("GET", "/v1/identities", list_identities, **_LIST),  # type: ignore[arg-type]
    Route("GET", "/v1/identities/{id}", get_identity, scope="admin", target=at("identities", "id", "read"),
          errors=("identity_not_found",)),
    Route("PATCH", "/v1/identities/{id}", patch_identity, scope="admin", target=at("identities", "id", "write"),
          body=IdentityPatch, errors=("identity_not_found", "forbidden", "mfa_required")),
    Route("DELETE", "/v1/identities/{id}", delete_identity, scope="admin",
          target=at("identities", "id", "delete"), statuses=(204,), errors=("identity_not_found", "forbidden")),
    Route("POST", "/v1/identities/{id}/mfa/totp", enrol_totp, statuses=(201,),
          errors=("identity_not_found", "forbidden")),
    Route("DELETE", "/v1/identities/{id}/mfa/totp", reset_totp, statuses=(204,),
          errors=("identity_not_found", "forbidden")),
)
