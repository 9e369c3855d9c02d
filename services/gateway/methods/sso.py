"""``GET /v1/auth/methods/{name}/authorize`` and ``POST /v1/auth/methods/{name}/callback`` (api.md §10): a
person signs in through an ``oidc`` method's provider (how: ``oidc``'s docstring); ``POST …/device`` and
``POST …/device/token``: the same with the provider's device authorization grant (``device``'s docstring).

All are public and spend from the ``auth`` rate limit. The method's tenant is ``?tenant_id=`` for
``authorize`` (a browser sends no headers of ours), ``X-Tenant-ID`` for the others, the root tenant when
neither. A tenant, method or role that isn't there is 404 ``role_not_found``. Refused callbacks and device
sign-ins that end refused are audited with their reason, good ones as a ``jwt`` login is; never with a code,
state, verifier, handle or token. A device poll that is still pending is not audited (it is no outcome).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.edge.routes import Route, json_response, read_model
from services.gateway.methods import device as dev
from services.gateway.methods.keys import KeySource
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
from shared.errors import AuthenticationRequired, RateLimited


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


async def device(request: web.Request) -> web.Response:
    """``{role}`` → a device sign-in: the provider's user code and verification URI, and Coffer's handle."""
    st, name = state(request), request.match_info["name"]
    body = await read_model(request, dev.DeviceStart)
    tenant, row = await _login_method(request, name, body.role, "oidc")
    repo = _repo(request)
    await repo.role(tenant, name, body.role)  # role_not_found before the provider is asked
    config = OidcConfig.model_validate(row["config"])
    source = key_source(st, tenant, row, config.as_jwt())
    await provider_endpoints(source)  # the discovery read (503 if it can't be)
    endpoint, nonce = dev.device_endpoint(source), new_nonce()
    grant = await dev.authorize_device(st.outbound, source.document, endpoint, config, open_secret(st.kms, row), nonce)
    handle = dev.new_handle()
    if not await repo.add_device(dev.handle_hash(handle), tenant, name, body.role, nonce,
                                 dev.seal_code(handle, tenant, name, grant.device_code), grant.interval,
                                 grant.expires_in, dev.MAX_PENDING):
        raise RateLimited("too many device sign-ins are pending for this method: try again later",
                          details={"category": "auth", "retry_after": 60}, headers={"Retry-After": "60"})
    answer = {"device_code": handle, "user_code": grant.user_code, "verification_uri": grant.verification_uri,
              "expires_in": grant.expires_in, "interval": grant.interval}
    if grant.verification_uri_complete is not None:
        answer["verification_uri_complete"] = grant.verification_uri_complete
    return json_response(answer, headers={"Cache-Control": "no-store"})


async def device_token(request: web.Request) -> web.Response:
    """``{device_code}`` (the handle) → the Coffer token once the person has signed in; until then 401
    ``authorization_pending`` / ``slow_down`` with ``details.interval``."""
    st, name = state(request), request.match_info["name"]
    body = await read_model(request, dev.DevicePoll)
    tenant, row = await _login_method(request, name, "", "oidc")
    repo, digest = _repo(request), dev.handle_hash(body.device_code)
    claimed = await repo.claim_device_poll(digest, tenant, name)
    resource = f"auth-methods/{name}/roles/{claimed['role'] if claimed else ''}"
    try:
        if claimed is None:
            raise dev.ended("expired_token")
        if not claimed["due"]:
            raise dev.pending("slow_down", claimed["interval_s"])
        config = OidcConfig.model_validate(row["config"])
        source = key_source(st, tenant, row, config.as_jwt())
        _, token_endpoint = await provider_endpoints(source)
        id_token = await _redeem_device(request, row, config, source, token_endpoint, body.device_code, claimed)
        role = RoleBody.model_validate((await repo.role(tenant, name, claimed["role"]))["body"])
        claims = await verify(id_token, source, config.as_jwt(), role.model_copy(
            update={"bound_audiences": [config.client_id]}))
        dev.check_device_nonce(claims.claims, claimed["nonce"])
    except AuthenticationRequired as exc:
        if not dev.keeps_polling(exc):
            await _audit(request, tenant, None, resource, exc, None)
        raise
    return await issue(request, tenant, name, resource, role, claims)


async def _redeem_device(request: web.Request, row: Any, config: OidcConfig, source: KeySource, token_endpoint: str,
                         handle: str, claimed: Any) -> str:
    """The provider's answer to this due poll: the ID token (the sign-in ends), a refusal that keeps it
    pending (``slow_down`` from the provider lengthens its interval), or one that ends it."""
    st, repo = state(request), _repo(request)
    code = dev.open_code(handle, row["tenant_id"], row["name"], claimed["device_code"])
    try:
        id_token = await dev.redeem_device(st.outbound, source.document, token_endpoint, config,
                                           open_secret(st.kms, row), code)
    except AuthenticationRequired as exc:
        reason = exc.details["reason"]
        if reason == "authorization_pending":
            raise dev.pending(reason, claimed["interval_s"]) from None
        if reason == "slow_down":
            raise dev.pending(reason, await repo.slow_device(claimed["handle_hash"]) or claimed["interval_s"]) \
                from None
        await repo.end_device(claimed["handle_hash"])
        raise
    if not await repo.end_device(claimed["handle_hash"]):  # gone meanwhile (its method deleted): not used
        raise dev.ended("expired_token")
    return id_token


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/auth/methods/{name}/authorize", authorize, public=True, category="auth", query=AuthorizeQuery,
          statuses=(302,), errors=("authentication_required", "role_not_found", "storage_error")),
    Route("POST", "/v1/auth/methods/{name}/callback", callback, public=True, category="auth", body=Callback,
          errors=("authentication_required", "role_not_found", "storage_error")),
    Route("POST", "/v1/auth/methods/{name}/device", device, public=True, category="auth", body=dev.DeviceStart,
          errors=("role_not_found", "invalid_config", "storage_error")),
    Route("POST", "/v1/auth/methods/{name}/device/token", device_token, public=True, category="auth",
          body=dev.DevicePoll, errors=("authentication_required", "role_not_found", "storage_error")),
)
