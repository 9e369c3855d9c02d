"""The device authorization grant (RFC 8628) of ``oidc`` methods (api.md §10): a person signs in for a
terminal with no browser — an SSH session, a container — by opening the provider's verification page on
any device and entering a short user code there.

Coffer is the provider's client (it holds the sealed client secret), so Coffer talks to the provider. ``POST
…/device`` asks the ``device_authorization_endpoint`` of the provider's discovery (with the client's
credentials, the method's scopes and a ``nonce``) and answers the user code and verification URI with a
*handle* of Coffer's own — never the provider's device code. That stays in the gateway's ``auth_device``
table under the handle's SHA-256, encrypted under a key derived from the handle (``seal_code``): a reader of
the database can't redeem it, since only the polling client holds the handle. It expires with the
provider's code (at most ``MAX_TTL``).

``POST …/device/token`` polls: Coffer asks the provider's token endpoint with the device code at most once
per interval per handle, whichever replica is asked (a poll that comes early is ``slow_down`` and makes the
interval 5 s longer, as RFC 8628 §3.5 has a provider do). Every refusal is 401 ``authentication_required``
with ``details.reason`` — RFC 8628's own names: ``authorization_pending`` and ``slow_down`` (keep polling;
``details.interval`` says how often), ``access_denied`` (the person refused), ``expired_token`` (the handle
is unknown, used or expired: one answer, whatever tenant or method it belongs to), ``device_code`` (the
provider would not redeem it for another reason); then the ID token's reasons, as a callback's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import Field, StrictStr
from yarl import URL

from services.gateway.methods.keys import KeySource
from services.gateway.methods.models import OidcConfig
from services.gateway.methods.oidc import id_token_of, provider_post, refusal
from shared.contracts import Contract
from shared.errors import AuthenticationRequired, InvalidConfig, ServiceUnavailable
from shared.outbound import MAX_URL, OutboundPolicy, OutboundRefused, parse_url

log = structlog.get_logger("coffer.gateway.methods")

GRANT = "urn:ietf:params:oauth:grant-type:device_code"
HANDLE = r"^[A-Za-z0-9_-]{43}$"  # secrets.token_urlsafe(32)
MAX_TTL = 1800  # the longest a device sign-in stays pending, whatever the provider says
MAX_PENDING = 1000  # device sign-ins pending per method
DEFAULT_INTERVAL = 5  # RFC 8628 §3.2, when the provider names none
MAX_DEVICE_CODE = 4096
_USER_CODE = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,62}[\x21-\x7e])?$")  # printable ASCII, shown as is
_ERROR = re.compile(r"^[a-z_]{1,64}$")
_KEEP_POLLING = {"authorization_pending": "the person has not finished signing in at the provider yet",
                 "slow_down": "polling too fast: wait the interval between polls"}
_ENDED = {"access_denied": "the person refused the sign-in at the provider",
          "expired_token": "no pending device sign-in has this device_code (unknown, used or expired)"}


class DeviceStart(Contract):
    role: StrictStr = Field(min_length=1, max_length=63)


class DevicePoll(Contract):
    #: the handle ``POST …/device`` answered (not the provider's device code)
    device_code: StrictStr = Field(pattern=HANDLE)


@dataclass(frozen=True)
class Grant:
    """What the provider's device authorization endpoint answered (RFC 8628 §3.2), checked."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int

    def __repr__(self) -> str:  # the codes are credentials: never in a traceback or a log line
        return f"Grant(expires_in={self.expires_in}, interval={self.interval})"


def new_handle() -> str:
    return secrets.token_urlsafe(32)


def handle_hash(handle: str) -> bytes:
    return hashlib.sha256(handle.encode()).digest()


def _code_key(handle: str, tenant_id: str, method: str) -> AESGCM:
    info = f"coffer/auth-device/{tenant_id}/{method}".encode()
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(handle.encode()))


def seal_code(handle: str, tenant_id: str, method: str, device_code: str) -> bytes:
    """The provider's device code, encrypted under a key only ``handle`` gives (AES-256-GCM, HKDF-SHA256)."""
    nonce = secrets.token_bytes(12)
    return nonce + _code_key(handle, tenant_id, method).encrypt(nonce, device_code.encode(), None)


def open_code(handle: str, tenant_id: str, method: str, sealed: bytes) -> str:
    return _code_key(handle, tenant_id, method).decrypt(sealed[:12], sealed[12:], None).decode()


def device_endpoint(source: KeySource) -> str:
    """The provider's ``device_authorization_endpoint`` (its discovery must name one the outbound guard
    allows), else ``invalid_config``: the method's provider does not offer the grant."""
    endpoint = (source.document or {}).get("device_authorization_endpoint")
    if endpoint is None:
        raise InvalidConfig("the method's OpenID provider does not offer the device authorization grant (its"
                            " discovery names no device_authorization_endpoint): sign in with a browser instead",
                            details={"field": "config.issuer", "reason": "no device_authorization_endpoint"})
    try:
        parse_url(endpoint, source.policy)
    except (OutboundRefused, ValueError, TypeError) as exc:
        reason = getattr(exc, "reason", "not a URL")
        raise InvalidConfig(f"the provider's device_authorization_endpoint can't be used: {reason}",
                            details={"field": "config.issuer", "reason": reason}) from None
    return str(endpoint)


async def authorize_device(policy: OutboundPolicy, document: dict[str, Any] | None, endpoint: str,
                           config: OidcConfig, secret: str, nonce: str) -> Grant:
    """A device code from the provider: ``invalid_config`` when it refuses (its ``error`` in
    ``details.reason``: the client may not use the grant, say) or answers something unusable, 503 when it
    can't answer."""
    status, answer = await provider_post(policy, document, endpoint, config, secret,
                                         {"scope": " ".join(config.scopes), "nonce": nonce})
    if status >= 500:
        raise ServiceUnavailable("the OpenID provider can't start a device sign-in now")
    if status != 200:
        error = _error_of(answer)
        raise InvalidConfig(f"the OpenID provider refused to start a device sign-in ({error})",
                            details={"field": "config.client_id", "reason": error})
    grant = _grant(answer)
    if grant is None:
        raise InvalidConfig("the OpenID provider's device authorization answer can't be used",
                            details={"field": "config.issuer", "reason": "unusable device authorization answer"})
    return grant


def _error_of(answer: Any) -> str:
    """The provider's ``error`` code when it is one (a short lowercase word), else ``refused``: no text of
    the provider's is repeated beyond that."""
    error = answer.get("error") if isinstance(answer, dict) else None
    return error if isinstance(error, str) and _ERROR.fullmatch(error) else "refused"


def _grant(answer: Any) -> Grant | None:
    if not isinstance(answer, dict):
        return None
    code, user = answer.get("device_code"), answer.get("user_code")
    uri = answer.get("verification_uri", answer.get("verification_url"))  # an older draft's name, still met
    complete, expires, interval = answer.get("verification_uri_complete"), answer.get("expires_in"), \
        answer.get("interval", DEFAULT_INTERVAL)
    if (not isinstance(code, str) or not 0 < len(code) <= MAX_DEVICE_CODE or not isinstance(user, str)
            or not _USER_CODE.fullmatch(user) or not _shown_url(uri)
            or (complete is not None and not _shown_url(complete))
            or type(expires) is not int or expires <= 0 or type(interval) is not int):
        return None
    return Grant(code, user, str(uri), complete, min(expires, MAX_TTL), min(max(interval, 1), 60))


def _shown_url(value: Any) -> bool:
    """A URL Coffer only shows (a person opens it): absolute ``http(s)``, printable ASCII, bounded."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URL or not value.isascii() or not value.isprintable() \
            or " " in value:
        return False
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("https", "http") and url.is_absolute() and url.user is None


async def redeem_device(policy: OutboundPolicy, document: dict[str, Any] | None, token_endpoint: str,
                        config: OidcConfig, secret: str, device_code: str) -> str:
    """The ID token the provider gives for ``device_code`` once the person has signed in; a refusal with
    RFC 8628's reason otherwise (``authorization_pending``, ``slow_down``: keep polling), 503 when the
    provider can't answer."""
    status, answer = await provider_post(policy, document, token_endpoint, config, secret,
                                         {"grant_type": GRANT, "device_code": device_code})
    if status == 200:
        return id_token_of(answer, "device_code")
    if status >= 500:
        raise ServiceUnavailable("the OpenID provider can't answer a device sign-in's poll now")
    error = "slow_down" if status == 429 else _error_of(answer)
    message = _KEEP_POLLING.get(error) or _ENDED.get(error)
    if message is None:
        log.warning("oidc_device_code_refused", error=error, status=status)
        raise refusal("device_code", "the provider would not redeem the device code")
    raise refusal(error, message)


def keeps_polling(exc: AuthenticationRequired) -> bool:
    """Is this refusal one a client answers by polling again (the device sign-in stays pending)?"""
    return exc.details.get("reason") in _KEEP_POLLING


def ended(reason: str) -> AuthenticationRequired:
    return refusal(reason, _ENDED[reason])


def pending(reason: str, interval: int) -> AuthenticationRequired:
    return AuthenticationRequired(_KEEP_POLLING[reason], details={"reason": reason, "interval": interval})


def check_device_nonce(claims: Any, nonce: str) -> None:
    """RFC 8628 has no ``nonce``, and many providers leave the ID token of a device grant without one (it
    comes straight from their token endpoint to Coffer, authenticated as the client: nothing to replay);
    when the provider does echo the ``nonce`` Coffer sent, it must be that one."""
    echoed = claims.get("nonce")
    if echoed is not None and (not isinstance(echoed, str) or not hmac.compare_digest(echoed.encode(),
                                                                                       nonce.encode())):
        raise refusal("nonce", "the ID token's nonce is not the device sign-in's")
