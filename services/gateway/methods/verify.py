"""What a token must be to log in with a role of a ``jwt`` method (api.md §10).

``verify`` checks, in this order, and refuses with ``authentication_required`` and ``details.reason``:

1. the form: a compact JWS of at most ``MAX_TOKEN`` characters, its header JSON (``signature``). An
   oversized token is refused here, as a 401 like any other bad token, so that a caller learns one shape of
   failure; the route's request model may bound ``jwt`` too. Header keys (``jku``, ``x5u``, ``jwk``) are
   never followed, and a ``crit`` header (no extension is understood) or an unencoded payload (``b64``
   other than true, RFC 7797) is refused (``signature``);
2. ``alg`` is one of ``ALGORITHMS`` — never ``none`` or ``HS*`` (``algorithm``);
3. a key: by ``kid`` from the ``KeySource`` (an unknown one after the bounded refetch: ``signature``); the key
   must fit ``alg`` — RSA for RS*/PS*, EC P-256 for ES256 and P-384 for ES384, Ed25519/Ed448 for EdDSA —
   and a JWK's own ``alg``, when it names one, must equal the header's (none fitting: ``algorithm``);
4. the signature, with that one algorithm (``jws``; ``signature``), then the payload a JSON object (``claims``);
5. ``exp`` is required, a number, not passed beyond the leeway (``expired``; missing or malformed:
   ``claims``); ``nbf`` and ``iat``, when present, not ahead beyond the leeway (``not_yet_valid``);
6. ``iss`` equals the method's issuer exactly (``issuer``);
7. the audience, as Vault's ``jwt`` auth: the accepted audiences are the role's ``bound_audiences``, else
   the method's ``audiences``. When there are some, ``aud`` (a string or a list) must name one of them; when
   there are none, a token that names an audience is refused — a token minted for another relying party
   must not log in here just because nobody thought to bind one (``audience``);
8. ``bound_subject`` equals ``sub``; every ``bound_claims`` entry is present and matches (any value, any
   glob); ``user_claim`` is a non-empty string of at most 256 characters; ``groups_claim`` (when named) is a
   string or a list of strings, at most 256 of 256 characters each (``claims``).

Messages never carry the token or a claim's value. Claim names starting with ``/`` are JSON pointers
(``models``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from services.gateway.methods.jws import Compact, Malformed, parse, signed_by
from services.gateway.methods.keys import ALGORITHMS, MAX_KID, Key, KeySource
from services.gateway.methods.models import JwtConfig, RoleBody
from shared.errors import AuthenticationRequired
from shared.globs import glob_matches

MAX_TOKEN = 16 * 1024
MAX_USER = 256
MAX_GROUPS = 256
MAX_GROUP = 256
#: a bound claim's values that are matched: more, or longer, and the claim does not match (bounded work)
MAX_VALUES = 256
MAX_VALUE = 4096

_CURVE = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1}


@dataclass(frozen=True)
class Claims:
    """A verified token: ``user`` is the ``user_claim`` value (the external identity's name), ``groups`` the
    ``groups_claim`` values; ``claims`` the whole payload (never logged as it is)."""

    user: str
    groups: tuple[str, ...]
    issuer: str
    subject: str | None
    expires_at: float
    claims: Mapping[str, Any] = field(repr=False)


def refusal(reason: str, message: str) -> AuthenticationRequired:
    return AuthenticationRequired(message, details={"reason": reason})


def fits(alg: str, key: Key) -> bool:
    """Can ``key`` check a signature made with ``alg``? (Its type and curve, and its JWK's ``alg``.)"""
    if key.alg is not None and key.alg != alg:
        return False
    k = key.key
    if alg[:2] in ("RS", "PS"):
        return isinstance(k, rsa.RSAPublicKey)
    if alg in _CURVE:
        return isinstance(k, ec.EllipticCurvePublicKey) and isinstance(k.curve, _CURVE[alg])
    if alg == "EdDSA":
        return isinstance(k, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey))
    return False


def claim_at(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``: a top-level one, or for a name starting with ``/`` the JSON pointer's target
    (RFC 6901: ``~1`` is ``/``, ``~0`` is ``~``; list items by index). ``None`` when absent."""
    if not name.startswith("/"):
        return claims.get(name)
    node: Any = claims
    for token in name[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, Mapping):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and (token == "0" or not token.startswith("0")):
            index = int(token)
            node = node[index] if index < len(node) else None
        else:
            return None
    return node


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or (isinstance(value, (int, float)) and math.isfinite(value)):
        return orjson.dumps(value).decode()
    return None


def claim_texts(value: Any) -> list[str] | None:
    """A claim's values as strings (a string, number or boolean, or a list of them; other list items are
    skipped); ``None`` if it has no such value or too many, or one too long, to match in bounded time."""
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_VALUES:
        return None
    texts = [t for t in map(_text, items) if t is not None]
    if not texts or any(len(t) > MAX_VALUE for t in texts):
        return None
    return texts


def _parsed(token: object) -> Compact:
    if not isinstance(token, str) or len(token) > MAX_TOKEN:
        raise refusal("signature", "the token is not a signed JWT")
    try:
        jws = parse(token)
    except Malformed:
        raise refusal("signature", "the token is not a signed JWT with a readable header") from None
    header = jws.header
    if "crit" in header or header.get("b64", True) is not True:
        raise refusal("signature", "the token names critical header extensions")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID):
        raise refusal("signature", "the token's kid is not a valid key id")
    return jws


def _signed_payload(jws: Compact, alg: str, keys: list[Key]) -> dict[str, Any]:
    if not any(signed_by(jws, alg, key.key) for key in keys):  # another key of the issuer may have signed it
        raise refusal("signature", "the token's signature does not verify")
    try:
        payload = orjson.loads(jws.payload)
    except orjson.JSONDecodeError:
        raise refusal("claims", "the token's payload is not a JSON object") from None
    if not isinstance(payload, dict):
        raise refusal("claims", "the token's payload is not a JSON object")
    return payload


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _check_times(payload: Mapping[str, Any], leeway: int, now: float) -> float:
    exp = _number(payload.get("exp"))
    if exp is None:
        raise refusal("claims", "the token must carry a numeric exp")
    if now > exp + leeway:
        raise refusal("expired", "the token has expired")
    for name in ("nbf", "iat"):
        if name in payload:
            value = _number(payload[name])
            if value is None:
                raise refusal("claims", f"the token's {name} is not a number")
            if value > now + leeway:
                raise refusal("not_yet_valid", "the token is not valid yet")
    return exp


def _check_audience(payload: Mapping[str, Any], accepted: tuple[str, ...]) -> None:
    aud = payload.get("aud")
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else [] if aud is None else None
    if named is None or not all(isinstance(a, str) for a in named):
        raise refusal("audience", "the token's aud is not a string or a list of strings")
    if not accepted:
        if named:
            raise refusal("audience", "the token names an audience, and neither the role nor the method binds one")
        return
    if not any(a in accepted for a in named):
        raise refusal("audience", "the token's audience is not one this role accepts")


def _check_claims(payload: Mapping[str, Any], role: RoleBody) -> tuple[str, tuple[str, ...]]:
    if role.bound_subject is not None and payload.get("sub") != role.bound_subject:
        raise refusal("claims", "the token's subject is not the role's bound subject")
    for name, globs in (role.bound_claims or {}).items():
        texts = claim_texts(claim_at(payload, name))
        if texts is None or not any(glob_matches(g, t) for t in texts for g in globs):
            raise refusal("claims", f"the token's claim '{name}' does not match the role")
    user = claim_at(payload, role.user_claim)
    if not isinstance(user, str) or not user or len(user) > MAX_USER:
        raise refusal("claims", f"the token's '{role.user_claim}' claim must be a string of 1-{MAX_USER} characters")
    groups: tuple[str, ...] = ()
    if role.groups_claim is not None:
        raw = claim_at(payload, role.groups_claim)
        values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else [] if raw is None else None
        if (values is None or len(values) > MAX_GROUPS
                or not all(isinstance(g, str) and 0 < len(g) <= MAX_GROUP for g in values)):
            raise refusal("claims", f"the token's '{role.groups_claim}' claim must be at most {MAX_GROUPS} strings")
        groups = tuple(dict.fromkeys(values))
    return user, groups


async def verify(token: str, source: KeySource, config: JwtConfig, role: RoleBody, *,
                 now: float | None = None) -> Claims:
    """The claims of ``token`` if it may log in with ``role`` of the method ``config`` (keys from ``source``);
    ``AuthenticationRequired`` with ``details.reason`` otherwise (see the module's docstring). Async only
    because an unknown ``kid`` may make ``source`` fetch the issuer's keys again (bounded)."""
    jws = _parsed(token)
    header = jws.header
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALGORITHMS:
        raise refusal("algorithm", f"the token's alg must be one of {', '.join(ALGORITHMS)}")
    keys = await source.candidates(header.get("kid"))
    if not keys:
        raise refusal("signature", "no key of the issuer matches the token's kid")
    fitting = [k for k in keys if fits(alg, k)]
    if not fitting:
        raise refusal("algorithm", "the token's alg does not fit the issuer's key")
    payload = _signed_payload(jws, alg, fitting)
    expires_at = _check_times(payload, config.leeway_seconds, time.time() if now is None else now)
    if payload.get("iss") != config.issuer:
        raise refusal("issuer", "the token's issuer is not the method's")
    _check_audience(payload, role.audiences(config))
    user, groups = _check_claims(payload, role)
    sub = payload.get("sub")
    return Claims(user, groups, config.issuer, sub if isinstance(sub, str) else None, expires_at, payload)
