"""A ``jwt`` method's keys fetched for real (api.md §10): an aiohttp issuer on 127.0.0.1 serving OIDC
discovery and a JWK set, reached through the outbound guard (the test policy allows 127.0.0.0/8 and http).

Discovery and a JWKS URL work; a discovery pointing ``jwks_uri`` at an address the policy refuses is
refused; slow, huge, non-JSON, redirecting and mismatched answers are ``could not connect`` (the issuer is
on a private address: nothing it answered is told); unknown kids fetch at most once per interval.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.gateway.methods.keys import KeySource
from services.gateway.methods.models import JwtConfig, RoleBody
from services.gateway.methods.verify import verify
from shared.errors import AuthenticationRequired, InvalidConfig
from shared.outbound import NOT_ALLOWED, OutboundPolicy
from shared.reach import COULD_NOT_CONNECT

POLICY = OutboundPolicy.from_cidrs(("127.0.0.0/8",), True)
RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256 = ec.generate_private_key(ec.SECP256R1())
ROLE = RoleBody(scopes=["secrets:read"], bound_audiences=["coffer"])


def public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    data: dict[str, Any] = jwt.get_algorithm_by_name(alg).to_jwk(private.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig", "alg": alg}


class Issuer:
    """An OpenID issuer's two documents under ``/<name>/``, with what each path was asked counted."""

    def __init__(self) -> None:
        self.base = ""
        self.hits: Counter[str] = Counter()
        self.jwks: list[dict[str, Any]] = [public_jwk(RSA, "rsa-1", "RS256"), public_jwk(P256, "ec-1", "ES256")]
        self.jwks_uri: dict[str, str] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/{name}/jwks", self.keys)
        return app

    async def discovery(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[f"{name}/discovery"] += 1
        issuer = f"{self.base}/{name}"
        if name == "slow":
            await asyncio.sleep(3)
        if name == "huge":
            return web.json_response({"issuer": issuer, "padding": "x" * 300_000})
        if name == "html":
            return web.Response(text="<html>issuer</html>", content_type="text/html")
        if name == "notjson":
            return web.Response(text="{not json", content_type="application/json")
        if name == "redirect":
            raise web.HTTPFound(f"{self.base}/good/.well-known/openid-configuration")
        if name == "mismatch":
            issuer = f"{self.base}/good"
        if name == "missing":
            raise web.HTTPNotFound()
        return web.json_response({"issuer": issuer, "jwks_uri": self.jwks_uri.get(name, f"{issuer}/jwks"),
                                  "id_token_signing_alg_values_supported": ["RS256", "ES256"]})

    async def keys(self, request: web.Request) -> web.Response:
        self.hits[f"{request.match_info['name']}/jwks"] += 1
        return web.json_response({"keys": self.jwks}, content_type="application/jwk-set+json")


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[Issuer]:
    served = Issuer()
    runner = web.AppRunner(served.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    served.base = f"http://127.0.0.1:{port}"
    try:
        yield served
    finally:
        await runner.cleanup()


def token(iss: str, key: Any = RSA, alg: str = "RS256", kid: str = "rsa-1") -> str:
    now = time.time()
    return jwt.encode({"iss": iss, "sub": "ci-job", "aud": "coffer", "iat": now, "exp": now + 120}, key,
                      algorithm=alg, headers={"kid": kid})


async def refused_config(config: JwtConfig, policy: OutboundPolicy = POLICY, **kwargs: Any) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as caught:
        await KeySource(config, policy, **kwargs).check()
    return caught.value


async def test_discovery_then_jwks_verifies_tokens(issuer: Issuer) -> None:
    config = JwtConfig(issuer=f"{issuer.base}/good")
    source = KeySource(config, POLICY)
    await source.check()
    assert {k.kid for k in source.keys} == {"rsa-1", "ec-1"}
    assert issuer.hits == {"good/discovery": 1, "good/jwks": 1}
    assert (await verify(token(config.issuer), source, config, ROLE)).user == "ci-job"
    assert (await verify(token(config.issuer, P256, "ES256", "ec-1"), source, config, ROLE)).user == "ci-job"
    assert issuer.hits == {"good/discovery": 1, "good/jwks": 1}  # cached


async def test_a_jwks_url_is_fetched_without_discovery(issuer: Issuer) -> None:
    config = JwtConfig(issuer="https://issuer.elsewhere", jwks_url=f"{issuer.base}/direct/jwks")
    source = KeySource(config, POLICY)
    assert (await verify(token(config.issuer), source, config, ROLE)).user == "ci-job"  # first use fetches
    assert issuer.hits == {"direct/jwks": 1}


@pytest.mark.parametrize("target", ["http://10.0.0.1:8080/jwks", "http://169.254.169.254/latest/jwks",
                                    "http://[::ffff:10.0.0.1]:8080/jwks", "http://127.0.0.1:22/jwks"])
async def test_a_discovery_pointing_jwks_uri_at_a_refused_address_is_refused(issuer: Issuer, target: str) -> None:
    issuer.jwks_uri["evil"] = target
    err = await refused_config(JwtConfig(issuer=f"{issuer.base}/evil"))
    assert err.details == {"field": "config.issuer", "reason": COULD_NOT_CONNECT}
    assert issuer.hits["evil/discovery"] == 1


@pytest.mark.parametrize("name", ["slow", "huge", "html", "notjson", "redirect", "mismatch", "missing"])
async def test_an_unusable_answer_is_could_not_connect(issuer: Issuer, name: str) -> None:
    started = time.monotonic()
    err = await refused_config(JwtConfig(issuer=f"{issuer.base}/{name}"), timeout=0.5)
    assert err.details == {"field": "config.issuer", "reason": COULD_NOT_CONNECT}
    assert "{" not in err.message and "<html>" not in err.message and "xxxx" not in err.message
    assert time.monotonic() - started < 2.0
    assert issuer.hits["good/discovery"] == 0  # the redirect was not followed


async def test_the_issuers_own_address_must_be_allowed(issuer: Issuer) -> None:
    err = await refused_config(JwtConfig(issuer=f"{issuer.base}/good"), OutboundPolicy(allow_http=True))
    assert err.details == {"field": "config.issuer", "reason": NOT_ALLOWED}
    err = await refused_config(JwtConfig(issuer=f"{issuer.base}/good"),
                               OutboundPolicy.from_cidrs(("127.0.0.0/8",), False))
    assert err.details["field"] == "config.issuer" and "https" in err.details["reason"]
    assert sum(issuer.hits.values()) == 0


async def test_a_refused_jwks_at_login_is_an_authentication_failure(issuer: Issuer) -> None:
    issuer.jwks_uri["evil"] = "http://10.0.0.1:8080/jwks"
    config = JwtConfig(issuer=f"{issuer.base}/evil")
    with pytest.raises(AuthenticationRequired) as caught:
        await verify(token(config.issuer), KeySource(config, POLICY), config, ROLE)
    assert caught.value.details == {"reason": "signature"}


async def test_unknown_kids_fetch_at_most_once_per_interval_and_a_rotation_is_found(issuer: Issuer) -> None:
    config = JwtConfig(issuer=f"{issuer.base}/good")
    source = KeySource(config, POLICY, refetch_interval=0.5)
    await source.check()
    floods = [verify(token(config.issuer, kid=f"made-up-{i}"), source, config, ROLE) for i in range(100)]
    results = await asyncio.gather(*floods, return_exceptions=True)
    assert all(isinstance(r, AuthenticationRequired) and r.details == {"reason": "signature"} for r in results)
    assert issuer.hits["good/jwks"] == 1 and source.fetches == 1  # check's fetch is this interval's
    issuer.jwks = [public_jwk(RSA_NEXT, "rsa-2", "RS256")]  # the issuer rotates its key
    rotated = token(config.issuer, RSA_NEXT, kid="rsa-2")
    with pytest.raises(AuthenticationRequired):
        await verify(rotated, source, config, ROLE)
    assert issuer.hits["good/jwks"] == 1
    await asyncio.sleep(0.6)
    assert (await verify(rotated, source, config, ROLE)).user == "ci-job"
    for i in range(50):
        with pytest.raises(AuthenticationRequired):
            await verify(token(config.issuer, kid=f"again-{i}"), source, config, ROLE)
    assert issuer.hits["good/jwks"] == 2 and issuer.hits["good/discovery"] == 2 and source.fetches == 2
