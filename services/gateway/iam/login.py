"""``POST /v1/auth/token``: client credentials, or a user's password (+ TOTP), for an access token.

Every way of failing looks the same from outside: the same 401
``authentication_required``, the same slow hash (an unknown name is checked
against a dummy hash of its kind), and — for passwords — the same write: a
failure is counted under the user (``user:<id>``) or, for a name that does not
exist, under an HMAC of the tenant and the name, so timing does not tell which
names exist. Ten failed password logins within 15 minutes lock the account for
15 minutes, answering exactly as a wrong password does; a successful login
clears the count. Client-secret logins are throttled per address instead (the
``auth`` rate limit). Every attempt, failed or not, is audited.

A user with a TOTP enrolment whose tenant or own ``require_mfa`` is set gets no
token for a password alone: the right password without ``totp_code`` answers
403 ``mfa_required`` (a wrong one, or a locked account, still the 401 above).
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web

from services.gateway.edge.middlewares import record_audit
from services.gateway.edge.routes import Route, json_response, read_object
from services.gateway.iam import domain
from services.gateway.iam.models import ClientCredentials, UserCredentials
from services.gateway.iam.totp import check_totp
from services.gateway.state import state
from shared.contracts import parse
from shared.errors import AuthenticationRequired, CofferError, MfaRequired

log = structlog.get_logger("coffer.gateway.login")

LOCK_AFTER = 10  # failures ...
LOCK_WINDOW = 900.0  # ... within this many seconds lock the account ...
LOCK_FOR = 900.0  # ... for this long


async def _matches(row: Any, column: str, secret: str) -> bool:
    """``secret`` against the row's hash; an unknown identity costs the same (a dummy hash of its kind)."""
    dummy = domain.dummy_client_secret_hash() if column == "secret_hash" else domain.dummy_hash()
    stored = row[column] if row is not None and row[column] else dummy
    valid = await domain.check_secret(secret, stored)
    return row is not None and valid


async def issue_token(request: web.Request) -> web.Response:
    """Client credentials or a user's password (+ TOTP) → an access token (JSON or OAuth2 form)."""
    data = await read_object(request, allow_form=True)
    if "username" in data:
        row, mfa_at, requested = await _user_login(request, parse(UserCredentials, data))
    else:
        creds = parse(ClientCredentials, data)
        row, mfa_at, requested = await client_login(request, creds), None, creds.scopes
    return json_response(token_answer(request, row, mfa_at, requested))


async def client_login(request: web.Request, creds: ClientCredentials) -> Any:
    """The service identity whose client id and secret these are (the attempt audited either way), else 401
    ``authentication_required``; the Vault listener's ``auth/approle/login`` comes here too."""
    row = await state(request).identities.identity_by_client_id(creds.client_id)
    ok = await _matches(row, "secret_hash", creds.client_secret)
    await _audit(request, row, creds.client_id, None if ok else AuthenticationRequired())
    if not ok:
        raise AuthenticationRequired("invalid client credentials")
    return row


def token_answer(request: web.Request, row: Any, mfa_at: int | None, requested: list[str] | None) -> dict[str, Any]:
    """A new token of the identity ``row``, with the scopes asked for (all it may have when none)."""
    scopes = domain.grant_scopes(row["allowed_scopes"], requested)
    token, ttl = state(request).signer.issue(row["id"], row["tenant_id"], scopes, mfa_at=mfa_at,
                                             generation=row["token_generation"])
    return {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "scope": " ".join(scopes),
            "tenant_id": row["tenant_id"]}


async def _user_login(request: web.Request, user: UserCredentials) -> tuple[Any, int | None, list[str] | None]:
    st = state(request)
    repo = st.identities
    row = await repo.user_by_name(user.tenant_id, user.username)
    key = f"user:{row['id']}" if row is not None else \
        "name:" + st.audit.field_mac(user.tenant_id or "(root)", user.username)
    ok = await _matches(row, "password_hash", user.password)
    mfa_at = None
    if ok and user.totp_code is not None:
        ok = await check_totp(repo, st.kms, row["id"], user.totp_code)
        mfa_at = int(time.time())
    if ok and await repo.login_locked(key):
        ok = False  # the right password, but locked: the answer can't differ from a wrong one
        log.info("login_locked", identity_id=row["id"])
    if not ok:
        await repo.record_login_failure(key, LOCK_AFTER, LOCK_WINDOW, LOCK_FOR)
        await _audit(request, row, user.username, AuthenticationRequired())
        raise AuthenticationRequired("invalid credentials")
    if mfa_at is None and row["mfa_at_login"]:
        # the right password, but the user (or its tenant) requires the second factor: no token. Neither a
        # failure nor a success for the lock: only the right password gets here, and only a code clears it
        step_up = MfaRequired("this account needs a TOTP code at login: send totp_code with the password",
                              details={"field": "totp_code"})
        await _audit(request, row, user.username, step_up)
        raise step_up
    await repo.clear_login_failures(key)
    await _audit(request, row, user.username, None)
    return row, mfa_at, user.scopes


async def _audit(request: web.Request, row: Any, login: str, error: CofferError | None) -> None:
    """An audit entry for the attempt: in the identity's tenant, or the root's for an unknown name.

    The name tried is kept only as an HMAC (it may be a mistyped password).
    """
    tenant = row["tenant_id"] if row is not None else await state(request).tenancy.root_tenant_id()
    if tenant is None:
        return  # not initialised: there is no audit chain yet
    await record_audit(request, tenant_id=tenant, identity_id=row["id"] if row is not None else None,
                       action=f"POST {request.path}",  # a static path: /v1/auth/token, Vault's approle login
                       resource=f"identities/{row['id']}" if row is not None else "auth/token",
                       outcome=error.code if error else "ok", status=error.status if error else 200,
                       sensitive={"login": login})


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/auth/token", issue_token, public=True, body=ClientCredentials,
          errors=("authentication_required", "insufficient_scope", "mfa_required", "storage_error")),
)
