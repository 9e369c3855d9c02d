"""Token calls (api.md §3): revoke, MFA step-up, signing-key rotation, the public keys, who am I."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from aiohttp import web

from services.gateway.edge.routes import (
    AUDIT_FIELDS,
    Route,
    context,
    json_response,
    principal,
    read_model,
    tenant_of,
)
from services.gateway.iam import domain
from services.gateway.iam.models import RevokeRequest, TotpCode
from services.gateway.iam.routes import authorize
from services.gateway.iam.totp import totp_verdict
from services.gateway.state import state
from shared.errors import InsufficientScope, MfaRequired, TenantAccessDenied, TokenInvalid


async def step_up(request: web.Request) -> web.Response:
    body = await read_model(request, TotpCode)
    st, who = state(request), principal(request)
    verdict = await totp_verdict(st.identities, st.kms, who.identity_id, body.totp_code)
    if verdict == "not_enrolled":  # the caller's own identity: telling it leaks nothing
        raise MfaRequired(
            "no TOTP factor is enrolled for this identity: enrol one with POST /v1/identities/{id}/mfa/totp"
            " (your own id, as GET /v1/auth/whoami shows), then step up with a code from it",
            details={"reason": "not_enrolled", "identity_id": who.identity_id})
    if verdict != "ok":
        raise MfaRequired("TOTP code is not valid (or was already used)", details={"reason": "invalid_code"})
    token, ttl = st.signer.issue(who.identity_id, who.tenant_id, tuple(sorted(who.scopes)),
                                 mfa_at=int(time.time()), generation=who.generation, auth_time=who.auth_time,
                                 session=who.session)
    return json_response({"access_token": token, "token_type": "Bearer", "expires_in": ttl,
                          "scope": " ".join(s for s in domain.ALL_SCOPES if s in who.scopes),
                          "tenant_id": who.tenant_id})


async def revoke(request: web.Request) -> web.Response:
    """Your own token by ``token``; any token of your tenant by ``token`` or ``jti`` as an admin.

    A ``jti`` revocation applies to tokens of the tenant the caller acts in (its
    own, or a child named with ``X-Tenant-ID``): naming another tenant's jti
    has no effect on that token. Revoking a token revokes every token made from
    the same login (``revoke_jti``).
    """
    body = await read_model(request, RevokeRequest)
    if body.token is not None:
        request[AUDIT_FIELDS] = {"token": body.token}
    st, who = state(request), principal(request)
    if body.token is not None:
        claims = await st.signer.decode_own(body.token)
        jti, owner, tenant = str(claims["jti"]), str(claims["sub"]), str(claims["tid"])
        expires, session = datetime.fromtimestamp(int(claims["exp"]), UTC), claims.get("sid")
    else:
        assert body.jti is not None
        jti, owner, tenant = body.jti, "", tenant_of(request)
        expires, session = datetime.now(UTC), None
    if owner != who.identity_id:
        if "admin" not in who.scopes:
            raise InsufficientScope("revoking others' tokens needs the 'admin' scope")
        if tenant != tenant_of(request):
            raise TenantAccessDenied("that token belongs to another tenant")
        await authorize(request, "sys/tokens", "revoke")
    await revoke_jti(request, tenant, jti, expires, session=str(session) if session else None)
    return web.Response(status=204)


async def revoke_jti(request: web.Request, tenant: str, jti: str, expires: datetime, *,
                     session: str | None = None) -> None:
    """Revoke the token ``jti`` of ``tenant`` and every token made from the same login, here at once and on
    other replicas through the ``token.revoked`` event.

    A token made from another (a Vault renewal, an MFA step-up) carries its login's first token's id as
    ``sid``, so revoking that id (``session``, or ``jti`` when the token is a login's own) revokes them all: a
    stolen token renewed before its owner revoked it must not outlive the revocation. Each id stays revoked
    until every token made from it so far has expired: ``expires``, and at least one token lifetime from now
    (no new one can be made from a revoked token)."""
    st = state(request)
    until = max(expires, datetime.now(UTC) + timedelta(seconds=st.signer.ttl))
    for revoked in dict.fromkeys(each for each in (jti, session) if each):
        await st.identities.revoke_token(tenant, revoked, until, context(request).request_id)
        st.revocations.token_revoked(tenant, revoked)


async def rotate_signing_key(request: web.Request) -> web.Response:
    return json_response({"kid": await state(request).signer.rotate()})


async def jwks(request: web.Request) -> web.Response:
    return json_response(state(request).signer.jwks())


async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    row = await state(request).identities.whoami(who.identity_id, who.tenant_id)
    if row is None:
        raise TokenInvalid("the token's identity no longer exists")
    return json_response({
        "identity": {"id": row["id"], "name": row["name"], "kind": row["kind"], "partner_admin": row["partner_admin"],
                     "mfa_enrolled": row["mfa_enrolled"]},
        "tenant": {"id": row["tenant_id"], "name": row["tenant_name"], "kind": row["tenant_kind"]},
        "scopes": sorted(who.scopes),
        "expires_at": who.expires_at,
        # when this token's holder last proved a second factor (None: never, with this token)
        "mfa_at": who.mfa_at,
    })


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/auth/jwks", jwks, public=True),
    Route("GET", "/v1/auth/whoami", whoami),
    Route("POST", "/v1/auth/mfa", step_up, body=TotpCode),
    Route("POST", "/v1/auth/revoke", revoke, body=RevokeRequest, statuses=(204,)),
    Route("POST", "/v1/auth/keys:rotate", rotate_signing_key, scope="admin", platform=True,
          target=lambda r: ("sys/keys", "rotate"), errors=("forbidden",)),
)
