"""A ``jwt`` method's config and its roles (api.md §10), as request bodies: no I/O.

Every string and list is bounded; a wrong type or an unknown field is 422 ``validation_error`` through
``shared.contracts.parse``. A malformed glob is ``invalid_glob`` and a bad duration ``invalid_duration``
(their own codes, as everywhere else in the API). Whether the issuer and JWKS URLs may be *reached* is the
outbound policy's to say: ``keys.check_urls`` and ``KeySource.check`` (``invalid_config``).

Claim names (``bound_claims`` keys, ``user_claim``, ``groups_claim``): a name starting with ``/`` is a
JSON pointer (RFC 6901) into nested claims, as Vault's ``bound_claims`` reads it —
``/kubernetes.io/serviceaccount/name`` is ``claims["kubernetes.io"]["serviceaccount"]["name"]``, ``~1``
stands for a ``/`` and ``~0`` for a ``~`` inside a name. Any other name is one top-level claim, dots and
all (``kubernetes.io`` is the claim of that name, not a path).
"""

from __future__ import annotations

import re
from typing import Annotated

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from pydantic import Field, StrictStr, field_validator, model_validator

from services.gateway.iam.domain import ALL_SCOPES
from services.gateway.iam.models import POLICY_NAME
from shared.contracts import DURATION_SCHEMA, Contract, HeaderSafeStr
from shared.durations import parse_duration
from shared.errors import InvalidDuration
from shared.globs import compile_glob
from shared.outbound import MAX_URL

#: the public keys a token may be signed with (PyJWT's key objects for RS*/PS*, ES256/ES384 and EdDSA)
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

MAX_PEM = 16 * 1024
MAX_KEYS = 10
MAX_AUDIENCES = 20
MAX_AUDIENCE = 256
MAX_CLAIMS = 20
MAX_GLOBS = 20
MAX_CLAIM_NAME = 128
MAX_SUBJECT = 1024
MAX_POLICIES = 50
MAX_LEEWAY = 600
MAX_TTL = 86400
MAX_SECRET = 1024
MAX_SCOPES = 20
MAX_REDIRECTS = 20
MAX_GROUP_POLICIES = 50
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_CURVES = (ec.SECP256R1, ec.SECP384R1)  # ES256, ES384: the curves of the allowed algorithms
_POINTER = re.compile(r"^(?:/(?:[^~/]|~[01])*)+$")

Url = Annotated[HeaderSafeStr, Field(min_length=1, max_length=MAX_URL)]
Audience = Annotated[HeaderSafeStr, Field(min_length=1, max_length=MAX_AUDIENCE)]
ClaimName = Annotated[HeaderSafeStr, Field(min_length=1, max_length=MAX_CLAIM_NAME)]
Glob = Annotated[StrictStr, Field(min_length=1, max_length=512)]
Duration = Annotated[StrictStr, Field(max_length=40, json_schema_extra=DURATION_SCHEMA)]
Pem = Annotated[StrictStr, Field(min_length=1, max_length=MAX_PEM)]
PolicyName = Annotated[StrictStr, Field(pattern=POLICY_NAME)]


def load_public_key(pem: str) -> PublicKey:
    """The key of a PEM ``PUBLIC KEY`` block; ``ValueError`` for anything else or a key no allowed algorithm
    uses (RSA under 2048 bits, an EC curve other than P-256/P-384, DSA, X25519…)."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError, UnicodeError):
        raise ValueError("not a PEM public key") from None
    return usable_key(key)


def usable_key(key: object) -> PublicKey:
    """``key`` if a token signed with an allowed algorithm could be checked with it, else ``ValueError``."""
    if isinstance(key, rsa.RSAPublicKey):
        # a huge modulus or exponent would make every verification slow: bounded like the issuers' own keys
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS or key.public_numbers().e >= 2**32:
            raise ValueError(f"an RSA key must have {MIN_RSA_BITS}-{MAX_RSA_BITS} bits and a small exponent")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise ValueError("an EC key must be on P-256 or P-384")
        return key
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return key
    raise ValueError("the key must be RSA, EC (P-256, P-384) or Ed25519/Ed448")


def _claim_name(name: str) -> str:
    if not 0 < len(name) <= MAX_CLAIM_NAME:  # here, not in the key's type: fuzzers ignore propertyNames
        raise ValueError(f"a claim name is 1 to {MAX_CLAIM_NAME} characters")
    if name.startswith("/") and not _POINTER.fullmatch(name):
        raise ValueError("a claim name starting with '/' must be a JSON pointer (each '~' followed by 0 or 1)")
    return name


def _seconds(text: str, field: str, most: int, *, allow_zero: bool = False) -> int:
    seconds = parse_duration(text, field=field, allow_zero=allow_zero)
    if seconds > most:
        raise InvalidDuration(f"'{field}' is at most {most}s", details={"field": field})
    return seconds


class JwtConfig(Contract):
    """``config`` of a ``jwt`` method. Keys from ``public_keys`` (pinned), else ``jwks_url``, else the
    issuer's OIDC discovery; the two are exclusive. With discovery the issuer must be a URL the outbound
    policy allows (``keys.check_urls``); otherwise it is only compared with ``iss``, so a non-URL issuer
    (Kubernetes' legacy ``kubernetes/serviceaccount``) works with pinned keys or a JWKS URL."""

    issuer: Url
    jwks_url: Url | None = None
    public_keys: list[Pem] | None = Field(None, min_length=1, max_length=MAX_KEYS)
    audiences: list[Audience] | None = Field(None, max_length=MAX_AUDIENCES)
    leeway: Duration = "60s"

    @field_validator("public_keys")
    @classmethod
    def _pem_keys(cls, value: list[str] | None) -> list[str] | None:
        for pem in value or ():
            load_public_key(pem)
        return value

    @field_validator("leeway")
    @classmethod
    def _leeway(cls, value: str) -> str:
        _seconds(value, "config.leeway", MAX_LEEWAY, allow_zero=True)
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> JwtConfig:
        if self.jwks_url is not None and self.public_keys is not None:
            raise ValueError("give jwks_url or public_keys, not both")
        return self

    @property
    def leeway_seconds(self) -> int:
        return _seconds(self.leeway, "config.leeway", MAX_LEEWAY, allow_zero=True)

    @property
    def discovery(self) -> bool:
        """Do the keys come from ``{issuer}/.well-known/openid-configuration``?"""
        return self.jwks_url is None and self.public_keys is None

    def pinned_keys(self) -> list[PublicKey]:
        return [load_public_key(pem) for pem in self.public_keys or ()]


class OidcConfig(Contract):
    """``config`` of an ``oidc`` method (people, Authorization Code + PKCE): the provider's endpoints and keys
    come from its discovery. ``client_secret`` is sealed apart (never stored here, never answered): required
    when the method is made, kept by a ``PATCH`` that leaves it out."""

    issuer: Url
    client_id: Annotated[HeaderSafeStr, Field(min_length=1, max_length=MAX_AUDIENCE)]
    client_secret: Annotated[StrictStr, Field(min_length=1, max_length=MAX_SECRET)] | None = None
    scopes: list[Annotated[StrictStr, Field(pattern=r"^[\x21\x23-\x5b\x5d-\x7e]{1,64}$")]] = \
        Field(default_factory=lambda: ["openid"], min_length=1, max_length=MAX_SCOPES)
    redirect_uris: list[Url] = Field(default_factory=list, max_length=MAX_REDIRECTS)
    leeway: Duration = "60s"

    @field_validator("scopes")
    @classmethod
    def _openid(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("the scopes must include 'openid'")
        return value

    @field_validator("leeway")
    @classmethod
    def _leeway(cls, value: str) -> str:
        _seconds(value, "config.leeway", MAX_LEEWAY, allow_zero=True)
        return value

    def as_jwt(self) -> JwtConfig:
        """The ID token's checks as a ``jwt`` method's: the issuer's keys by discovery, ``aud`` the client id."""
        return JwtConfig(issuer=self.issuer, audiences=[self.client_id], leeway=self.leeway)

    def stored(self) -> dict[str, object]:
        """What the ``config`` column holds (and ``GET`` answers): everything but the client secret."""
        return self.model_dump(exclude_none=True, exclude={"client_secret"})


class RoleBody(Contract):
    """``PUT /v1/auth/methods/{name}/roles/{role}``: what a token must carry, and what logging in with it gives.

    ``bound_claims``: every named claim must be present and match — a string, or a list of strings, any of
    which matches any of the claim's globs (§4 globs: ``*`` within a ``/``-separated segment, ``**`` across
    segments). Numbers and booleans are compared as their JSON text (``42``, ``true``)."""

    bound_audiences: list[Audience] | None = Field(None, max_length=MAX_AUDIENCES)
    bound_subject: Annotated[HeaderSafeStr, Field(min_length=1, max_length=MAX_SUBJECT)] | None = None
    bound_claims: dict[HeaderSafeStr, Annotated[list[Glob], Field(min_length=1, max_length=MAX_GLOBS)]] | None = \
        Field(None, max_length=MAX_CLAIMS)
    user_claim: ClaimName = "sub"
    groups_claim: ClaimName | None = None
    scopes: list[StrictStr] = Field(max_length=len(ALL_SCOPES))
    policies: list[PolicyName] = Field(default_factory=list, max_length=MAX_POLICIES)
    ttl: Duration = "15m"
    #: more policies for the members of a group (a value of ``groups_claim``): ``{"<group>": ["<policy>", …]}``
    group_policies: dict[StrictStr, Annotated[list[PolicyName], Field(min_length=1, max_length=MAX_POLICIES)]] | None \
        = Field(None, max_length=MAX_GROUP_POLICIES)

    @model_validator(mode="after")
    def _groups_named(self) -> RoleBody:
        if self.group_policies and self.groups_claim is None:
            raise ValueError("group_policies needs groups_claim (the claim that names the groups)")
        if any(not 0 < len(group) <= 256 for group in self.group_policies or {}):
            raise ValueError("a group's name is 1 to 256 characters")
        return self

    def policies_for(self, groups: tuple[str, ...]) -> list[str]:
        """The role's policies, then those ``group_policies`` gives the groups the token names (no repeats)."""
        named = list(self.policies)
        for group in groups:
            named.extend((self.group_policies or {}).get(group, ()))
        return list(dict.fromkeys(named))

    def all_policies(self) -> list[str]:
        """Every policy the role names (that must exist when it is written)."""
        return list(dict.fromkeys([*self.policies, *(p for ps in (self.group_policies or {}).values() for p in ps)]))

    @field_validator("bound_claims")
    @classmethod
    def _claims(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for name, globs in (value or {}).items():
            _claim_name(name)
            for pattern in globs:
                compile_glob(pattern)  # invalid_glob, with the pattern in details
        return value

    @field_validator("user_claim", "groups_claim")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else _claim_name(value)

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(ALL_SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {list(ALL_SCOPES)}")
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str) -> str:
        _seconds(value, "ttl", MAX_TTL)
        return value

    @property
    def ttl_seconds(self) -> int:
        return _seconds(self.ttl, "ttl", MAX_TTL)

    def audiences(self, config: JwtConfig) -> tuple[str, ...]:
        """The audiences a token must name one of: the role's, else the method's (none: it must name none)."""
        return tuple(self.bound_audiences or config.audiences or ())

