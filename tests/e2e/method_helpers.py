"""Helpers of the auth-method tests (api.md §10): a local OpenID issuer, tokens it mints, logging in.

``Issuer`` is one aiohttp server on 127.0.0.1 holding any number of issuers under ``/<name>/`` — each with
its OIDC discovery document and its JWK set (RSA, EC P-256 and Ed25519 keys, each with a ``kid``) — and
counting what each path was asked, so a test can tell how often the gateway fetched the keys.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.conftest import Api, remember_secret

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_NEXT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
P256 = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()
KEYS: dict[str, tuple[Any, str]] = {"rsa-1": (RSA, "RS256"), "ec-1": (P256, "ES256"), "ed-1": (ED, "EdDSA")}
AUDIENCE = "coffer"


def public_jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    data: dict[str, Any] = jwt.get_algorithm_by_name(alg).to_jwk(private.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig", "alg": alg}


class Issuer:
    """Issuers under ``/<name>/`` of one server: ``add`` one, ``mint`` its tokens, ``hits`` per path."""

    def __init__(self) -> None:
        self.base = ""
        self.hits: Counter[str] = Counter()
        self.keys: dict[str, dict[str, tuple[Any, str]]] = {}
        self.jwks_uri: dict[str, str] = {}

    def add(self, name: str | None = None) -> tuple[str, str]:
        """A new issuer with the three keys: its name and its URL (the ``iss`` of its tokens)."""
        name = name or f"iss-{secrets.token_hex(4)}"
        self.keys[name] = dict(KEYS)
        return name, self.url(name)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def mint(self, name: str, claims: dict[str, Any] | None = None, *, kid: str = "rsa-1", alg: str | None = None,
             key: Any = None, iss: str | None = None, **extra: Any) -> str:
        """A token of issuer ``name``: ``iss``, ``aud`` and five minutes' ``exp`` unless ``claims`` say
        otherwise (a ``None`` value drops the claim), signed with ``kid``'s key (or ``key`` / ``alg``)."""
        now = int(time.time())
        payload: dict[str, Any] = {"iss": iss or self.url(name), "aud": AUDIENCE, "sub": "workload-1",
                                   "iat": now, "exp": now + 300, **(claims or {}), **extra}
        payload = {k: v for k, v in payload.items() if v is not None}
        private, default_alg = self.keys[name].get(kid, KEYS.get(kid, (RSA, "RS256")))
        signed = jwt.encode(payload, key if key is not None else private, algorithm=alg or default_alg,
                            headers={"kid": kid})
        return remember_secret(signed)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/{name}/jwks", self._jwks)
        return app

    async def _discovery(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[f"{name}/discovery"] += 1
        if name not in self.keys:
            raise web.HTTPNotFound()
        jwks_uri = self.jwks_uri.get(name, f"{self.url(name)}/jwks")
        return web.json_response({"issuer": self.url(name), "jwks_uri": jwks_uri,
                                  "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"]})

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.hits[f"{name}/jwks"] += 1
        if name not in self.keys:
            raise web.HTTPNotFound()
        return web.json_response({"keys": [public_jwk(k, kid, alg) for kid, (k, alg) in self.keys[name].items()]})


async def serve_issuer() -> AsyncIterator[Issuer]:
    issuer = Issuer()
    runner = web.AppRunner(issuer.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    issuer.base = f"http://127.0.0.1:{port}"
    try:
        yield issuer
    finally:
        await runner.cleanup()


async def make_method(api: Api, issuer_url: str, name: str | None = None, **config: Any) -> dict[str, Any]:
    """A ``jwt`` method by OIDC discovery (unless ``config`` says otherwise)."""
    status, body, _ = await api.request("POST", "/v1/auth/methods", json={
        "name": name or f"m-{secrets.token_hex(4)}", "type": "jwt",
        "config": {"issuer": issuer_url, "audiences": [AUDIENCE], **config}})
    assert status == 201, body
    return dict(body)


async def put_role(api: Api, method: str, role: str, **body: Any) -> dict[str, Any]:
    status, made, _ = await api.request("PUT", f"/v1/auth/methods/{method}/roles/{role}", json=body)
    assert status == 200, made
    return dict(made)


async def login(api: Api, method: str, role: str, token: str, tenant: str | None = None) -> tuple[int, Any, Any]:
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    status, body, resp_headers = await api.request("POST", f"/v1/auth/methods/{method}/login", token=None,
                                                   headers=headers, json={"role": role, "jwt": token})
    if status == 200:
        remember_secret(body["access_token"])
    return status, body, resp_headers
