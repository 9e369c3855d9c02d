"""Where a ``jwt`` method's public keys come from (api.md §10): pinned, a JWKS URL, or OIDC discovery.

One ``KeySource`` per method (per process). Keys are cached by ``kid``; a token naming a ``kid`` the cache
hasn't got makes the source fetch again — at most once per ``refetch_interval`` (a minute), whatever the
cause, so a flood of made-up kids costs the issuer one request a minute. A fetch that fails keeps the keys
it had. Only ``check`` (config time) fetches regardless, and raises.

Every fetch is one aiohttp session through ``shared.outbound.guarded_connector`` (every address checked at
connect time, no redirects followed), under its own total timeout, reading at most ``max_bytes`` of a JSON
answer. What an issuer answered is told only as ``shared.reach`` allows: a failure to get a usable answer
is ``could not connect``; an answer's shape (a status, "not JSON", "another issuer") only when every
address the fetch reached was public. Never a body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import orjson
import structlog
from yarl import URL

from services.gateway.methods.models import JwtConfig, PublicKey, usable_key
from shared.errors import InvalidConfig
from shared.outbound import Lookup, OutboundPolicy, OutboundRefused, check, guarded_connector, parse_url, system_lookup
from shared.reach import COULD_NOT_CONNECT, Reach, cause, note_peers, read_at_most

log = structlog.get_logger("coffer.gateway.methods")

#: what a token may be signed with: never ``none``, never an HMAC (a public key is no shared secret)
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
MAX_ANSWER = 256 * 1024
MAX_JWKS_KEYS = 50
MAX_KID = 256
DISCOVERY = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class Key:
    """One public key; ``kid`` and ``alg`` as its JWK names them (a pinned key names neither)."""

    key: PublicKey
    kid: str | None = None
    alg: str | None = None


def discovery_url(issuer: str) -> str:
    """OIDC discovery's address for ``issuer`` (a trailing ``/`` is not doubled)."""
    return issuer.rstrip("/") + DISCOVERY


def check_urls(config: JwtConfig, policy: OutboundPolicy) -> None:
    """The form of the URLs the method fetches (scheme — ``http`` only when the policy allows it —, host,
    port, no credentials): ``invalid_config`` naming the field. Addresses are ``KeySource.check``'s."""
    for field, url in _targets(config):
        try:
            parse_url(url, policy)
        except OutboundRefused as exc:
            raise InvalidConfig(f"config.{field} can't be used: {exc.reason}",
                                details={"field": f"config.{field}", "reason": exc.reason}) from None


def _targets(config: JwtConfig) -> list[tuple[str, str]]:
    if config.public_keys is not None:
        return []
    if config.jwks_url is not None:
        return [("jwks_url", config.jwks_url)]
    return [("issuer", discovery_url(config.issuer))]


def parse_jwks(doc: Mapping[str, Any]) -> list[Key]:
    """The usable signing keys of a JWK set (RSA, EC P-256/P-384, OKP; ``use`` absent or ``sig``; ``alg``
    absent or allowed); others are skipped, and so is anything after the first ``MAX_JWKS_KEYS``."""
    raw = doc.get("keys")
    if not isinstance(raw, list):
        return []
    keys: list[Key] = []
    for jwk in raw[:MAX_JWKS_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        kid, alg = jwk.get("kid"), jwk.get("alg")
        if jwk.get("use", "sig") != "sig" or (alg is not None and alg not in ALGORITHMS):
            continue
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID):
            continue
        try:
            key = usable_key(jwt.PyJWK(jwk).key)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError, OverflowError):
            continue
        keys.append(Key(key, kid, alg))
    return keys


class _Unusable(Exception):
    """No usable keys: ``shown`` is what the answer was (for a public issuer), ``None`` if nothing usable
    came back at all."""

    def __init__(self, shown: str | None, exc: BaseException | None = None) -> None:
        super().__init__(shown or COULD_NOT_CONNECT)
        self.shown = shown
        self.exc = exc


class KeySource:
    """A method's keys: ``candidates(kid)`` for a login, ``check()`` when the config is written.

    ``refetch_interval`` (seconds) bounds fetches after the first; ``fetches`` counts them (a test asserts
    the bound). ``clock`` is monotonic seconds."""

    def __init__(self, config: JwtConfig, policy: OutboundPolicy, *, name: str = "", refetch_interval: float = 60.0,
                 timeout: float = 5.0, max_bytes: int = MAX_ANSWER, lookup: Lookup = system_lookup,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.policy, self.name = config, policy, name
        self.refetch_interval, self.timeout, self.max_bytes = refetch_interval, timeout, max_bytes
        self.lookup, self.clock = lookup, clock
        self.fetches = 0
        #: the last good discovery document (an ``oidc`` method reads its endpoints there)
        self.document: dict[str, Any] | None = None
        self._pinned = [Key(k) for k in config.pinned_keys()] if config.public_keys is not None else None
        self._keys: list[Key] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def keys(self) -> list[Key]:
        """The keys known now (pinned, or the last good fetch's)."""
        return list(self._pinned) if self._pinned is not None else list(self._keys)

    async def candidates(self, kid: str | None) -> list[Key]:
        """The keys a token naming ``kid`` may be checked with: those with that ``kid`` (fetching again, within
        the interval's bound, when there is none), else the keys that name no ``kid``; every key for a token
        naming none. Pinned keys name no ``kid``: all of them. Never raises."""
        if self._pinned is not None:
            return list(self._pinned)
        found = self._with(kid)
        if not found:
            await self._refresh()
            found = self._with(kid)
        if not found and kid is not None:
            found = [k for k in self._keys if k.kid is None]
        return found

    def _with(self, kid: str | None) -> list[Key]:
        return list(self._keys) if kid is None else [k for k in self._keys if k.kid == kid]

    async def _refresh(self) -> None:
        async with self._lock:  # concurrent misses wait for one fetch and then find it recent
            now = self.clock()
            if self._fetched_at is not None and now - self._fetched_at < self.refetch_interval:
                return
            self._fetched_at = now
            try:
                self._keys = await self._fetch()
            except _Unusable as exc:
                log.warning("auth_method_keys_unusable", method=self.name, shown=exc.shown,
                            cause=cause(exc.exc) if exc.exc is not None else None)

    async def check(self) -> None:
        """The config's keys can be used: the URLs' form and addresses pass the outbound guard, and the
        issuer's discovery (when used) and JWKS answer usable keys. ``invalid_config`` otherwise, with
        ``details.field`` and ``details.reason`` (``could not connect`` for whatever failed upstream, unless
        the issuer is public and answered something we can name)."""
        check_urls(self.config, self.policy)
        for field, url in _targets(self.config):
            try:
                await check(url, self.policy, self.lookup)
            except OutboundRefused as exc:
                raise InvalidConfig(f"config.{field} can't be used: {exc.reason}",
                                    details={"field": f"config.{field}", "reason": exc.reason}) from None
        if self._pinned is not None:
            return
        field = "jwks_url" if self.config.jwks_url is not None else "issuer"
        reach = Reach()
        try:
            keys = await self._fetch(reach)
        except _Unusable as exc:
            log.warning("auth_method_keys_unusable", method=self.name, shown=exc.shown, public=reach.public,
                        cause=cause(exc.exc) if exc.exc is not None else None)
            reason = exc.shown if exc.shown is not None and reach.public else COULD_NOT_CONNECT
            raise InvalidConfig(f"the keys of config.{field} can't be used: {reason}",
                                details={"field": f"config.{field}", "reason": reason}) from None
        async with self._lock:
            self._keys, self._fetched_at = keys, self.clock()

    async def _fetch(self, reach: Reach | None = None) -> list[Key]:
        """The issuer's keys, by discovery or from the JWKS URL; ``_Unusable`` for any failure."""
        reach = reach if reach is not None else Reach()
        self.fetches += 1
        connector = note_peers(guarded_connector(self.policy, reach.lookup(self.lookup), limit=2), reach)
        try:
            async with asyncio.timeout(self.timeout), aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout),
                    headers={"User-Agent": "coffer-auth-method", "Accept": "application/json"}) as http:
                jwks_url = self.config.jwks_url
                if jwks_url is None:
                    doc = await self._json(http, discovery_url(self.config.issuer))
                    if doc.get("issuer") != self.config.issuer:
                        raise _Unusable("the discovery document names another issuer")
                    jwks_url = doc.get("jwks_uri")
                    try:
                        parse_url(jwks_url, self.policy)
                    except OutboundRefused as exc:
                        raise _Unusable(f"the discovery's jwks_uri can't be used: {exc.reason}") from None
                keys = parse_jwks(await self._json(http, str(jwks_url)))
                if jwks_url != self.config.jwks_url:
                    self.document = doc
        except TimeoutError as exc:
            raise _Unusable(None, exc) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise _Unusable(None, exc) from None
        if not keys:
            raise _Unusable("the JWK set holds no usable signing key")
        return keys

    async def _json(self, http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        async with http.get(URL(url), allow_redirects=False) as resp:
            if resp.status != 200:
                raise _Unusable(f"the issuer answered HTTP {resp.status}")
            raw = await read_at_most(resp.content, self.max_bytes + 1)
            if len(raw) > self.max_bytes:
                raise _Unusable(None, ValueError("answer too large"))
            if not resp.content_type.endswith("json"):
                raise _Unusable("the issuer's answer is not JSON")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _Unusable("the issuer's answer is not JSON") from None
        if not isinstance(doc, dict):
            raise _Unusable("the issuer's answer is not a JSON object")
        return doc
