"""Identity and token rules of the gateway, without I/O.

Scope arithmetic, the hashes of client secrets and passwords, and the claims
of a token. (Request models are in ``iam/models.py``.)
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from shared.cpu import run_cpu
from shared.errors import InsufficientScope

ALL_SCOPES: tuple[str, ...] = ("secrets:read", "secrets:write", "pki", "leases", "webhooks", "events", "admin")

#: the scope that listing a resource needs, by the resource's first segment (others: ``admin``)
_LIST_SCOPES = {"secrets": "secrets:read", "webhooks": "webhooks", "pki": "pki", "leases": "leases",
                "engines": "leases"}


def scope_to_list(resource: str) -> str:
    """The scope an identity needs to list ``resource`` (as the list routes demand it)."""
    return _LIST_SCOPES.get(resource.split("/", 1)[0], "admin")

# scrypt cost: N=2^15, r=8, p=1 (32 MiB, ~50 ms here). Stored with the hash so it can change.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1


def new_id(prefix: str) -> str:
    """An opaque, prefixed id (``ten_…``, ``idn_…``)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def new_client_secret() -> str:
    return "cs_" + secrets.token_urlsafe(32)


def hash_client_secret(secret: str) -> str:
    """``sha256$<digest>`` of a generated client secret (fast: no executor needed).

    Client secrets are 256 random bits made by ``new_client_secret``, not
    something a person chose: no dictionary or brute force gets anywhere near
    them, so a slow hash would buy nothing and cost ~50 ms of CPU and 32 MiB
    per token request (the way GitHub and others store generated tokens).
    Passwords, which people choose, keep scrypt (``hash_secret``).
    """
    return "sha256$" + base64.b64encode(hashlib.sha256(secret.encode()).digest()).decode()


async def hash_password(password: str) -> str:
    """``hash_secret`` in the CPU pool (scrypt: ~50 ms and 32 MiB)."""
    return await run_cpu(hash_secret, password)


def hash_secret(secret: str) -> str:
    """A slow salted hash for passwords: ``scrypt$N$r$p$salt$hash`` (CPU-heavy: ``hash_password`` off the loop)."""
    salt = secrets.token_bytes(16)
    digest = Scrypt(salt=salt, length=32, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P).derive(secret.encode())
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


@functools.cache
def dummy_hash() -> str:
    """Verified against when the user is unknown, so both failures cost the same."""
    return hash_secret(secrets.token_urlsafe(16))


@functools.cache
def dummy_client_secret_hash() -> str:
    """Verified against when the client id is unknown, so both failures cost the same."""
    return hash_client_secret(new_client_secret())


def _is_fast_hash(stored: str) -> bool:
    return stored.startswith("sha256$")


async def check_secret(secret: str, stored: str) -> bool:
    """``verify_secret``, inline for a client secret's fast hash, in the hashing threads for scrypt."""
    if _is_fast_hash(stored):
        return verify_secret(secret, stored)
    return await run_cpu(verify_secret, secret, stored)


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time check of ``secret`` against ``hash_secret``'s or ``hash_client_secret``'s output."""
    if _is_fast_hash(stored):
        return hmac.compare_digest(hash_client_secret(secret).encode(), stored.encode())
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = Scrypt(
            salt=base64.b64decode(salt), length=32, n=int(n), r=int(r), p=int(p)
        ).derive(secret.encode())
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def grant_scopes(allowed: tuple[str, ...] | list[str], requested: list[str] | None) -> tuple[str, ...]:
    """The scopes a token gets: all allowed ones, or the requested subset of them."""
    if not requested:
        return tuple(s for s in ALL_SCOPES if s in allowed)
    extra = sorted(set(requested) - set(allowed))
    if extra:
        raise InsufficientScope(
            "requested scopes exceed what this identity is allowed", details={"scopes": extra}
        )
    return tuple(s for s in ALL_SCOPES if s in requested)


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request."""

    identity_id: str
    tenant_id: str
    scopes: frozenset[str]
    expires_at: datetime
    token_id: str
    mfa_at: datetime | None = None
    #: the identity's token generation when the token was issued (older ones are void)
    generation: int = 0
    #: the login this token comes from: the id of its first token, for a token made from another (a Vault
    #: renewal, an MFA step-up; ``None`` for a login's own). Revoking one token of a login revokes them all.
    session_id: str | None = None
    #: when that login happened (epoch seconds; ``None``: at ``iat``, a login's own token)
    auth_time: int | None = None

    @property
    def session(self) -> str:
        """The id every token of this login shares (Vault's accessor): the login's first token's."""
        return self.session_id or self.token_id

    def mfa_fresh(self, max_age: float, now: datetime | None = None) -> bool:
        """Did the caller step up with MFA within ``max_age`` seconds?"""
        return self.mfa_at is not None and ((now or datetime.now(UTC)) - self.mfa_at).total_seconds() <= max_age


def token_claims(
    identity_id: str, tenant_id: str, scopes: tuple[str, ...], now: int, ttl: int, mfa_at: int | None = None,
    generation: int = 0,
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": identity_id,
        "tid": tenant_id,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl,
        "jti": "tok_" + secrets.token_hex(12),
        "gen": generation,
    }
    if mfa_at is not None:
        claims["mfa_at"] = mfa_at
    return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    mfa_at = claims.get("mfa_at")
    return Principal(
        identity_id=str(claims["sub"]),
        tenant_id=str(claims["tid"]),
        scopes=frozenset(str(claims.get("scope", "")).split()),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        token_id=str(claims["jti"]),
        mfa_at=datetime.fromtimestamp(int(mfa_at), UTC) if mfa_at else None,
        generation=int(claims.get("gen", 0)),
        session_id=str(claims["sid"]) if claims.get("sid") else None,
        auth_time=int(claims.get("auth_time") or claims["iat"]),
    )
