"""``GET /v1/auth/methods/{name}/authorize`` and ``POST /v1/auth/methods/{name}/callback`` (api.md §10): a
person signs in through an ``oidc`` method's provider (how: ``oidc``'s docstring).

Both are public and spend from the ``auth`` rate limit. The method's tenant is ``?tenant_id=`` for
``authorize`` (a browser sends no headers of ours), ``X-Tenant-ID`` for ``callback``, the root tenant when
neither. A tenant, method or role that isn't there is 404 ``role_not_found``. Refused callbacks are audited
with their reason, good ones as a ``jwt`` login is; neither with the code, state, verifier or ID token.
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.edge.routes import Route, read_model
from services.gateway.methods.models import OidcConfig, RoleBody
from services.gateway.methods.oidc import (
    PENDING_TTL,
    AuthorizeQuery,
    Callback,
    authorize_location,
    check_nonce,
    check_pending,
    new_nonce,
    open_secret,
    provider_endpoints,
    redeem,
    redirect,
    redirect_allowed,
    refusal,
    state_hash,
)
from services.gateway.methods.routes import _audit, _login_method, _repo, issue, key_source
from services.gateway.methods.verify import verify
from services.gateway.state import state
from shared.contracts import parse
from shared.errors import AuthenticationRequired


async def authorize(request: web.Request) -> web.Response:
    """302 to the provider's authorization endpoint, the sign-in kept pending under its state."""
    st, name = state(request), request.match_info["name"]
    q = parse(AuthorizeQuery, dict(request.query))
    tenant, row = await _login_method(request, name, q.role, "oidc", q.tenant_id)
    await _repo(request).role(tenant, name, q.role)  # role_not_found before anything is kept
    config = OidcConfig.model_validate(row["config"])
    if not redirect_allowed(q.redirect_uri, config):
        raise refusal("redirect_uri", "the redirect_uri is not one of the method's, nor a loopback one")
    auth_endpoint, _ = await provider_endpoints(key_source(st, tenant, row, config.as_jwt()))
    nonce = new_nonce()
    if not await _repo(request).add_pending(state_hash(q.state), tenant, name, q.role, q.redirect_uri, nonce,
                                            q.code_challenge, PENDING_TTL):
        raise refusal("state", "a sign-in with this state is already pending: make a new state")
    return redirect(authorize_location(auth_endpoint, config, q, nonce))


async def callback(request: web.Request) -> web.Response:
    """``{code, state, code_verifier, redirect_uri}`` → the Coffer token, as ``login`` answers."""
    st, name = state(request), request.match_info["name"]
    body = await read_model(request, Callback)
    tenant, row = await _login_method(request, name, "", "oidc")
    repo = _repo(request)
    pending = await repo.take_pending(state_hash(body.state), tenant, name)
    resource = f"auth-methods/{name}/roles/{pending['role'] if pending else ''}"
    try:
        check_pending(pending, body)
        role_row = await repo.role(tenant, name, pending["role"])
        config = OidcConfig.model_validate(row["config"])
        source = key_source(st, tenant, row, config.as_jwt())
        _, token_endpoint = await provider_endpoints(source)
        id_token = await redeem(st.outbound, source.document, token_endpoint, config, open_secret(st.kms, row), body)
        role = RoleBody.model_validate(role_row["body"])
        claims = await verify(id_token, source, config.as_jwt(), role.model_copy(
            update={"bound_audiences": [config.client_id]}))
        check_nonce(claims.claims, pending)
    except AuthenticationRequired as exc:
        await _audit(request, tenant, None, resource, exc, None)
        raise
    return await issue(request, tenant, name, resource, role, claims)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/auth/methods/{name}/authorize", authorize, public=True, category="auth", query=AuthorizeQuery,
          statuses=(302,), errors=("authentication_required", "role_not_found", "storage_error")),
    Route("POST", "/v1/auth/methods/{name}/callback", callback, public=True, category="auth", body=Callback,
          errors=("authentication_required", "role_not_found", "storage_error")),
)
