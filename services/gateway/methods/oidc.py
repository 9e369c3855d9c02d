"""``oidc`` methods (api.md §10): people sign in through their OpenID provider, Authorization Code with PKCE.

``GET …/authorize`` checks the ``redirect_uri`` (one of the method's ``redirect_uris``, or a loopback
``http://127.0.0.1:<any port>/…`` / ``http://[::1]:<port>/…``, RFC 8252 §7.3), makes a ``nonce`` and keeps
the pending sign-in — role, redirect URI, nonce, the client's S256 ``code_challenge`` — in the gateway's
``auth_pending`` table under the SHA-256 of the client's ``state``, for ``PENDING_TTL`` seconds, so any
replica can finish it; then answers 302 to the provider's ``authorization_endpoint``.

``POST …/callback`` takes the pending sign-in (deleted as it is read: a state works once), checks the
redirect URI and the verifier against it, redeems the code at the provider's ``token_endpoint`` (HTTP Basic
when the provider offers ``client_secret_basic``, else ``client_secret_post``; with the ``code_verifier``;
through the outbound guard) and checks the ID token as a ``jwt`` login checks its token — the issuer's
JWKS, ``iss``, ``aud`` = the client id, ``exp`` — plus ``nonce`` = the pending one. Refusals are 401
``authentication_required`` with ``details.reason``: ``state`` (unknown, used or expired), ``redirect_uri``,
``code_verifier``, ``code`` (the provider would not redeem the code), ``nonce``, and the ``jwt`` reasons.

The client secret is sealed under the tenant's KEK (``secret_*`` columns of ``auth_methods``, AAD the tenant
and method) and opened only to redeem a code; it is never answered or logged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import structlog
from aiohttp import web
from pydantic import Field, StrictStr
from yarl import URL

from services.gateway.methods.keys import KeySource
from services.gateway.methods.models import OidcConfig
from shared.contracts import Contract, Query
from shared.crypto import Sealed, seal, unseal
from shared.errors import AuthenticationRequired, InvalidConfig, ServiceUnavailable
from shared.outbound import MAX_URL, OutboundPolicy, OutboundRefused, guarded_connector, parse_url
from shared.reach import cause, read_at_most

log = structlog.get_logger("coffer.gateway.methods")

PENDING_TTL = 600
MAX_ANSWER = 256 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "::1")
STATE = r"^[A-Za-z0-9._~-]{16,512}$"
CHALLENGE = r"^[A-Za-z0-9_-]{43}$"  # base64url of a SHA-256, unpadded
VERIFIER = r"^[A-Za-z0-9._~-]{43,128}$"  # RFC 7636 §4.1


class AuthorizeQuery(Query):
    role: StrictStr = Field(min_length=1, max_length=63)
    redirect_uri: StrictStr = Field(min_length=1, max_length=MAX_URL)
    state: StrictStr = Field(pattern=STATE)
    code_challenge: StrictStr = Field(pattern=CHALLENGE)
    code_challenge_method: StrictStr = Field("S256", pattern=r"^S256$")
    #: the tenant of the method (a browser sends no ``X-Tenant-ID``); left out: the header's, else the root
    tenant_id: StrictStr | None = Field(None, max_length=64)


class Callback(Contract):
    code: StrictStr = Field(min_length=1, max_length=4096)
    state: StrictStr = Field(pattern=STATE)
    code_verifier: StrictStr = Field(pattern=VERIFIER)
    redirect_uri: StrictStr = Field(min_length=1, max_length=MAX_URL)


def refusal(reason: str, message: str) -> AuthenticationRequired:
    return AuthenticationRequired(message, details={"reason": reason})


def secret_aad(tenant_id: str, method: str) -> bytes:
    return f"gateway/auth-method/{tenant_id}/{method}".encode()


def seal_secret(kms: Any, tenant_id: str, method: str, secret: str) -> Sealed:
    return seal(kms.tenant(tenant_id), secret.encode(), secret_aad(tenant_id, method))


def open_secret(kms: Any, row: Any) -> str:
    sealed = Sealed(row["secret_kek_id"], row["secret_wrapped_key"], row["secret_nonce"], row["secret_ciphertext"])
    return unseal(kms.tenant(row["tenant_id"]), sealed, secret_aad(row["tenant_id"], row["name"])).decode()


def state_hash(state: str) -> bytes:
    return hashlib.sha256(state.encode()).digest()


def challenge_of(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def is_loopback(uri: str) -> bool:
    """An RFC 8252 loopback redirect: ``http``, host 127.0.0.1 or [::1], any port, no credentials or fragment."""
    try:
        url = URL(uri)
    except ValueError:
        return False
    return (url.scheme == "http" and url.host in LOOPBACK_HOSTS and url.user is None and url.password is None
            and not url.fragment and url.is_absolute())


def check_redirects(config: OidcConfig) -> None:
    """Each configured redirect URI is absolute ``https`` (``http`` only for a loopback), without a fragment."""
    for uri in config.redirect_uris:
        try:
            url = URL(uri)
            ok = url.is_absolute() and not url.fragment and url.user is None and (
                url.scheme == "https" or is_loopback(uri))
        except ValueError:
            ok = False
        if not ok:
            raise InvalidConfig("config.redirect_uris: each an absolute https URL (http only for 127.0.0.1 or"
                                " [::1]) without a fragment", details={"field": "config.redirect_uris"})


def redirect_allowed(uri: str, config: OidcConfig) -> bool:
    return uri in config.redirect_uris or is_loopback(uri)


def endpoints(document: dict[str, Any] | None, policy: OutboundPolicy) -> tuple[str, str]:
    """The provider's ``authorization_endpoint`` and ``token_endpoint`` from its discovery document; the token
    endpoint must be one the outbound guard allows. ``InvalidConfig`` (``config.issuer``) otherwise."""
    doc = document or {}
    auth, token = doc.get("authorization_endpoint"), doc.get("token_endpoint")
    try:
        if not isinstance(auth, str) or URL(auth).scheme not in ("https", "http") or not URL(auth).is_absolute():
            raise OutboundRefused("the discovery names no usable authorization_endpoint")
        parse_url(token, policy)
    except (OutboundRefused, ValueError, TypeError) as exc:
        reason = getattr(exc, "reason", "the discovery names no usable token_endpoint")
        raise InvalidConfig(f"the provider's discovery can't be used: {reason}",
                            details={"field": "config.issuer", "reason": reason}) from None
    return auth, str(token)


async def provider_endpoints(source: KeySource) -> tuple[str, str]:
    """As ``endpoints``, fetching the discovery first when this replica has none (503 if it can't)."""
    if source.document is None:
        await source.candidates(None)  # the bounded refetch: discovery and JWKS
    try:
        return endpoints(source.document, source.policy)
    except InvalidConfig:
        raise ServiceUnavailable("the OpenID provider's discovery can't be read now") from None


def authorize_location(endpoint: str, config: OidcConfig, q: AuthorizeQuery, nonce: str) -> str:
    url = URL(endpoint)
    return str(url.with_query({**url.query, "response_type": "code", "client_id": config.client_id,
                               "redirect_uri": q.redirect_uri, "scope": " ".join(config.scopes), "state": q.state,
                               "nonce": nonce, "code_challenge": q.code_challenge,
                               "code_challenge_method": "S256"}))


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})


async def provider_post(policy: OutboundPolicy, document: dict[str, Any] | None, endpoint: str, config: OidcConfig,
                        secret: str, form: dict[str, str], *, timeout: float = 10.0) -> tuple[int, Any]:
    """POST ``form`` to one of the provider's endpoints as the method's client — HTTP Basic when the provider
    offers ``client_secret_basic``, else ``client_secret_post`` — through the outbound guard, under its own
    timeout, reading at most ``MAX_ANSWER`` bytes: the status and the JSON answer (``None`` when the answer
    is not JSON or too large). 503 when the provider can't be reached. Neither the form, the secret nor the
    provider's answer is logged."""
    offered = (document or {}).get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    headers = {"Accept": "application/json", "User-Agent": "coffer-auth-method"}
    if "client_secret_basic" in offered or "client_secret_post" not in offered:
        pair = f"{quote(config.client_id, safe='')}:{quote(secret, safe='')}"  # RFC 6749 §2.3.1
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    else:
        form = {**form, "client_id": config.client_id, "client_secret": secret}
    try:
        async with asyncio.timeout(timeout), aiohttp.ClientSession(
                connector=guarded_connector(policy, limit=2), timeout=aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.post(URL(endpoint), data=form, headers=headers, allow_redirects=False) as resp:
                raw = await read_at_most(resp.content, MAX_ANSWER + 1)
                status = resp.status
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        log.warning("oidc_provider_unreachable", cause=cause(exc))
        raise ServiceUnavailable("the OpenID provider can't be reached") from None
    if len(raw) > MAX_ANSWER:
        return status, None
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, None


async def redeem(policy: OutboundPolicy, document: dict[str, Any] | None, token_endpoint: str, config: OidcConfig,
                 secret: str, body: Callback, *, timeout: float = 10.0) -> str:
    """The ID token the provider gives for ``body.code``: ``code`` refusal when it refuses, 503 when it can't
    be reached."""
    status, answer = await provider_post(policy, document, token_endpoint, config, secret, {
        "grant_type": "authorization_code", "code": body.code, "redirect_uri": body.redirect_uri,
        "code_verifier": body.code_verifier}, timeout=timeout)
    if status != 200:
        raise refusal("code", "the provider did not redeem the code")
    return id_token_of(answer, "code")


def id_token_of(answer: Any, reason: str) -> str:
    """The ``id_token`` of a token endpoint's answer, else a ``reason`` refusal."""
    id_token = answer.get("id_token") if isinstance(answer, dict) else None
    if not isinstance(id_token, str):
        raise refusal(reason, "the provider's token answer holds no ID token")
    return id_token


def check_pending(pending: Any, body: Callback) -> None:
    """The pending sign-in exists and is live, and the callback's redirect URI and verifier are its own."""
    if pending is None or not pending["live"]:
        raise refusal("state", "no pending sign-in has this state (unknown, used or expired)")
    if body.redirect_uri != pending["redirect_uri"]:
        raise refusal("redirect_uri", "the redirect_uri is not the one the sign-in began with")
    if not hmac.compare_digest(challenge_of(body.code_verifier), pending["code_challenge"]):
        raise refusal("code_verifier", "the code_verifier does not match the sign-in's code_challenge")


def check_nonce(claims: Any, pending: Any) -> None:
    nonce = claims.get("nonce")
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), str(pending["nonce"]).encode()):
        raise refusal("nonce", "the ID token's nonce is not the sign-in's")


def new_nonce() -> str:
    return secrets.token_urlsafe(32)
