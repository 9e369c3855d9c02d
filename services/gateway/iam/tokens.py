"""Token signing keys: Ed25519 JWTs (``alg: EdDSA``, ``kid``), shared by all replicas.

The first gateway to start generates the key and stores it sealed by the KMS
(associated data ``gateway/signing-key/<kid>``); every replica loads it from
the database. Verification accepts exactly one algorithm, EdDSA, and any
unretired key by ``kid``; an unknown ``kid`` reloads the keys (at most once a
second), so a key rotated on another replica is picked up.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import asyncpg
import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.gateway.iam.domain import Principal, principal_from_claims, token_claims
from shared.crypto import KmsProvider, Sealed, seal, unseal
from shared.errors import ServiceUnavailable, TokenExpired, TokenInvalid

log = structlog.get_logger("coffer.gateway.signing")

ALGORITHM = "EdDSA"
VERIFIED_CACHE = 10_000
_REQUIRED = ["sub", "tid", "scope", "exp", "iat", "jti"]


def signing_key_aad(kid: str) -> bytes:
    return f"gateway/signing-key/{kid}".encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class SigningKeyStore:
    """The signing keys in the gateway's schema (the private half sealed by the KMS)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def signing_keys(self) -> list[asyncpg.Record]:
        """Every unretired key, newest first."""
        return await self.pool.fetch(
            "SELECT kid, public_key, kek_id, wrapped_key, nonce, ciphertext, created_at"
            " FROM signing_keys WHERE retired_at IS NULL ORDER BY created_at DESC")

    async def insert_signing_key_if_none(self, kid: str, public_key: bytes, sealed: Sealed) -> bool:
        """Store a first signing key unless a replica already did; ``True`` if ours won."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('coffer.signing_keys'))")
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)"):
                return False
            await self._insert(conn, kid, public_key, sealed)
        return True

    async def insert_signing_key(self, kid: str, public_key: bytes, sealed: Sealed) -> None:
        async with self.pool.acquire() as conn:
            await self._insert(conn, kid, public_key, sealed)

    @staticmethod
    async def _insert(conn: asyncpg.Connection, kid: str, public_key: bytes, sealed: Sealed) -> None:
        await conn.execute(
            "INSERT INTO signing_keys (kid, public_key, kek_id, wrapped_key, nonce, ciphertext)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            kid, public_key, sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)


class TokenSigner:
    """Issues and verifies the gateway's access tokens."""

    def __init__(self, repo: SigningKeyStore, kms: KmsProvider, ttl: int) -> None:
        self.repo = repo
        self.kms = kms
        self.ttl = ttl
        self._public: dict[str, Ed25519PublicKey] = {}
        self._signing: tuple[str, Ed25519PrivateKey] | None = None
        self._last_reload = 0.0
        self._verified: dict[str, Principal] = {}

    def _new_key(self) -> tuple[str, bytes, Sealed]:
        private = Ed25519PrivateKey.generate()
        kid = "key_" + secrets.token_hex(8)
        raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return kid, public, seal(self.kms, raw, signing_key_aad(kid))

    async def ensure_key(self) -> None:
        """Generate the first signing key if there is none, then load the keys."""
        if not await self.repo.signing_keys():
            kid, public, sealed = self._new_key()
            if await self.repo.insert_signing_key_if_none(kid, public, sealed):
                log.info("signing_key_created", kid=kid)
        await self.reload()

    async def rotate(self) -> str:
        """A new signing key signs from now on; tokens of the older ones stay valid until they expire.

        Other replicas pick it up when they first see its ``kid`` (or on their next reload).
        """
        kid, public, sealed = self._new_key()
        await self.repo.insert_signing_key(kid, public, sealed)
        await self.reload()
        log.info("signing_key_rotated", kid=kid)
        return kid

    async def decode_own(self, token: str) -> dict[str, Any]:
        """The claims of a token we signed, even an expired one (for revocation)."""
        principal = None
        try:
            principal = await self.verify(token)
        except TokenExpired:
            pass
        if principal is None:
            claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
            return claims
        return {"jti": principal.token_id, "sub": principal.identity_id, "tid": principal.tenant_id,
                "exp": int(principal.expires_at.timestamp()), "sid": principal.session_id,
                "auth_time": principal.auth_time}

    async def reload(self) -> None:
        rows = await self.repo.signing_keys()
        if not rows:
            raise ServiceUnavailable("no token signing key")
        self._public = {r["kid"]: Ed25519PublicKey.from_public_bytes(r["public_key"]) for r in rows}
        newest = rows[0]
        if self._signing is None or self._signing[0] != newest["kid"]:
            raw = unseal(
                self.kms,
                Sealed(newest["kek_id"], newest["wrapped_key"], newest["nonce"], newest["ciphertext"]),
                signing_key_aad(newest["kid"]),
            )
            self._signing = (newest["kid"], Ed25519PrivateKey.from_private_bytes(raw))
        self._last_reload = time.monotonic()

    def issue(self, identity_id: str, tenant_id: str, scopes: tuple[str, ...],
              mfa_at: int | None = None, generation: int = 0, ttl: int | None = None,
              auth_time: int | None = None, session: str | None = None) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds (``generation``: the identity's, now; ``ttl``:
        shorter than the platform's, never longer; ``auth_time`` and ``session``: when the login it is made
        from happened and that login's first token's id, for a token made from another — revoking any token
        of a login revokes every one made from it)."""
        assert self._signing is not None, "ensure_key() first"
        kid, key = self._signing
        lifetime = self.ttl if ttl is None else max(1, min(ttl, self.ttl))
        claims = token_claims(identity_id, tenant_id, scopes, int(time.time()), lifetime, mfa_at, generation)
        if auth_time is not None:
            claims["auth_time"] = auth_time
        if session is not None:
            claims["sid"] = session
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid}), lifetime

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``token_invalid`` / ``token_expired`` otherwise.

        Verified tokens are remembered until they expire (an Ed25519 check and
        the JSON decoding were ~12 % of a read's time); revocation is checked by
        the caller on every request, not cached here.
        """
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at.timestamp() > time.time():
                return known
            del self._verified[token]
        principal = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.pop(next(iter(self._verified)))  # the oldest
        self._verified[token] = principal
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise TokenInvalid("token algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenInvalid("token has no key id")
        key = self._public.get(kid)
        if key is None and time.monotonic() - self._last_reload > 1.0:
            await self.reload()
            key = self._public.get(kid)
        if key is None:
            raise TokenInvalid("token signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], options={"require": _REQUIRED}, leeway=5
            )
            return principal_from_claims(claims)
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired") from None
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            raise TokenInvalid("token signature or claims invalid") from None

    def jwks(self) -> dict[str, Any]:
        """The public keys, as a JWK set (RFC 8037 OKP)."""
        return {
            "keys": [
                {
                    "kty": "OKP", "crv": "Ed25519", "alg": ALGORITHM, "use": "sig", "kid": kid,
                    "x": _b64url(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)),
                }
                for kid, key in self._public.items()
            ]
        }
