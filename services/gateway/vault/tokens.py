"""Tokens and logins on the Vault listener (api.md §13): ``auth/token/*-self``, ``auth/approle/login`` and
``auth/<method>/login``.

A Coffer token is what Vault clients hold as their token (``X-Vault-Token``). The logins are the main API's
own, answered in Vault's ``auth`` shape: approle's ``role_id``/``secret_id`` are a service identity's
client id and secret (``iam/login.client_login``), and ``auth/<method>/login`` is the §10 ``jwt`` method of
that name (``methods/routes.login``: Vault's ``jwt`` and ``kubernetes`` auth take the same ``{role, jwt}``).
Renewing gives a new token of the same identity, scopes and MFA moment — no longer-lived than the one
renewed, and never later than ``COFFER_VAULT_TOKEN_MAX_TTL`` after the login it came from — and of the same
login (its ``sid``): revoking any token of a login (revoke-self, the main API's revoke, an admin's revoke of
the accessor) revokes every renewal, as Vault's renewals are one token. A renewal is refused when the login
would not be let in now (``_login_still_holds``).
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web
from pydantic import Field, StrictStr

from services.gateway.edge.listener import bearer_of
from services.gateway.edge.routes import Route, principal, read_model
from services.gateway.iam import login as iam_login
from services.gateway.iam.domain import Principal
from services.gateway.iam.models import ClientCredentials
from services.gateway.iam.routes.tokens import revoke_jti
from services.gateway.methods import routes as methods
from services.gateway.state import state
from services.gateway.vault.answers import answer, from_epoch, moment, token_auth, unverified_claims
from shared.contracts import Contract
from shared.durations import parse_duration
from shared.errors import Forbidden, TokenInvalid, ValidationError


class RenewBody(Contract):
    """``auth/token/renew-self``: ``increment`` in seconds (a number or digits) or a duration (``1h``)."""

    increment: int | StrictStr | None = Field(None, union_mode="left_to_right")


class AppRoleLogin(Contract):
    role_id: StrictStr = Field(min_length=1, max_length=200)
    secret_id: StrictStr = Field(min_length=1, max_length=500, repr=False)


def _seconds(increment: int | str | None) -> int | None:
    if increment is None or increment in ("", 0):
        return None
    if isinstance(increment, str) and not increment.isdigit():
        return parse_duration(increment, field="increment")
    seconds = int(increment)
    if not 0 < seconds <= 10 * 366 * 86400:
        raise ValidationError.on("increment", "must be a positive number of seconds or a duration")
    return seconds


async def lookup_self(request: web.Request) -> web.Response:
    """The caller's token as Vault describes one."""
    token, who = bearer_of(request), principal(request)
    assert token is not None
    claims = unverified_claims(token)
    row = await state(request).identities.whoami(who.identity_id, who.tenant_id)
    if row is None:
        raise TokenInvalid("the token's identity no longer exists")
    policies = await state(request).policies.policy_names_for(who.identity_id)
    issued = int(claims["iat"])
    return answer(request, data={
        "accessor": who.session, "creation_time": issued, "creation_ttl": int(claims["exp"]) - issued,
        "display_name": str(row["name"]), "entity_id": who.identity_id, "expire_time": moment(who.expires_at),
        "explicit_max_ttl": 0, "id": token, "identity_policies": [], "issue_time": moment(from_epoch(issued)),
        "meta": {"tenant_id": who.tenant_id, "scope": " ".join(sorted(who.scopes))}, "num_uses": 0,
        "orphan": True, "path": "auth/token/lookup-self", "policies": policies, "renewable": True,
        "ttl": max(0, int(who.expires_at.timestamp() - time.time())), "type": "service"})


async def renew_self(request: web.Request) -> web.Response:
    """A new token of the caller's identity, scopes and MFA moment (the one renewed stays valid until its
    ``exp``): as long-lived as the one renewed at most (``increment`` may ask for less), never beyond
    ``COFFER_VAULT_TOKEN_MAX_TTL`` after the login."""
    body = await read_model(request, RenewBody)
    st, who, token = state(request), principal(request), bearer_of(request)
    assert token is not None
    claims = unverified_claims(token)
    now = int(time.time())
    logged_in = who.auth_time or int(claims["iat"])
    left = logged_in + st.settings.vault_token_max_ttl - now
    if left < 1:
        raise Forbidden("this login's tokens can't be renewed any more: log in again",
                        details={"max_ttl": st.settings.vault_token_max_ttl})
    await _login_still_holds(request, who)
    lifetime = min(int(claims["exp"]) - int(claims["iat"]), left, _seconds(body.increment) or left)
    mfa_at = int(who.mfa_at.timestamp()) if who.mfa_at is not None else None
    renewed, _ = st.signer.issue(who.identity_id, who.tenant_id, tuple(sorted(who.scopes)), mfa_at=mfa_at,
                                 generation=who.generation, ttl=lifetime, auth_time=logged_in,
                                 session=who.session)
    return answer(request, auth=await token_auth(request, renewed, tenant_id=who.tenant_id))


async def _login_still_holds(request: web.Request, who: Principal) -> None:
    """A renewal is a login without credentials: 403 ``forbidden`` when the login it continues would not be let
    in now — its auth method was deleted (Vault checks a jwt role still exists), or a password alone no longer
    does (MFA required since, and this login never gave a code)."""
    rules = await state(request).identities.login_rules(who.identity_id)
    if rules is None or not rules["method_live"]:
        raise Forbidden("the auth method this token's login came by is gone: log in again",
                        details={"reason": "method_deleted"})
    if rules["mfa_at_login"] and who.mfa_at is None:
        raise Forbidden("this identity needs a TOTP code at login now: log in again with one",
                        details={"reason": "mfa_required"})


async def revoke_self(request: web.Request) -> web.Response:
    """The caller's own token, revoked (204), and with it every token renewed from the same login (Vault's
    renewals keep one token)."""
    who = principal(request)
    await revoke_jti(request, who.tenant_id, who.token_id, who.expires_at, session=who.session_id)
    return web.Response(status=204)


async def approle_login(request: web.Request) -> web.Response:
    """``{role_id, secret_id}``: a service identity's client credentials → a token, in Vault's ``auth``."""
    body = await read_model(request, AppRoleLogin)
    row = await iam_login.client_login(request, ClientCredentials(client_id=body.role_id,
                                                                  client_secret=body.secret_id))
    issued = iam_login.token_answer(request, row, None, None)
    return answer(request, auth=await token_auth(request, issued["access_token"], tenant_id=issued["tenant_id"]))


async def method_login(request: web.Request) -> web.Response:
    """``auth/<method>/login`` ``{role, jwt}``: the §10 ``jwt`` method ``<method>``'s login, in Vault's ``auth``
    (the tenant is ``X-Vault-Namespace``'s, else the root tenant, as ``X-Tenant-ID`` is on the main API)."""
    issued: dict[str, Any] = orjson.loads((await methods.login(request)).body)  # type: ignore[arg-type]
    return answer(request, auth=await token_auth(request, issued["access_token"], tenant_id=issued["tenant_id"]))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/auth/token/lookup-self", lookup_self),
    Route("POST", "/v1/auth/token/renew-self", renew_self, category="auth", body=RenewBody,
          errors=("forbidden", "invalid_duration")),
    Route("POST", "/v1/auth/token/revoke-self", revoke_self, statuses=(204,)),
    Route("POST", "/v1/auth/approle/login", approle_login, public=True, category="auth", body=AppRoleLogin,
          errors=("authentication_required",)),
    Route("POST", "/v1/auth/{name}/login", method_login, public=True, category="auth", body=methods.Login,
          errors=("authentication_required", "role_not_found")),
)
