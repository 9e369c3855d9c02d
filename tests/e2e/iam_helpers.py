"""Helpers for identity/policy tests: identities with policies, tokens, TOTP codes."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from tests.conftest import Api, remember_secret


def name(prefix: str = "i") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def token(api: Api, client_id: str, client_secret: str, **extra: Any) -> str:
    status, body, _ = await api.request("POST", "/v1/auth/token", token=None,
                                        json={"client_id": client_id, "client_secret": client_secret, **extra})
    assert status == 200, body
    return str(remember_secret(body["access_token"]))


async def identity(api: Api, scopes: list[str], rules: list[dict[str, Any]] | None = None, *,
                   tenant: str | None = None, partner_admin: bool = False) -> dict[str, Any]:
    """A service identity (in ``tenant``), bound to a policy of ``rules``, with a token."""
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    status, body, _ = await api.request("POST", "/v1/identities", headers=headers, json={
        "name": name("svc"), "kind": "service", "allowed_scopes": scopes, "partner_admin": partner_admin})
    assert status == 201, body
    remember_secret(body["client_secret"])
    if rules:
        policy = name("p")
        status, pol, _ = await api.request("POST", "/v1/policies", headers=headers,
                                           json={"name": policy, "rules": rules})
        assert status == 201, pol
        status, bnd, _ = await api.request("POST", "/v1/bindings", headers=headers,
                                           json={"policy": policy, "identity_id": body["id"]})
        assert status == 201, bnd
        body["policy"] = policy
    body["token"] = await token(api, body["client_id"], body["client_secret"])
    return body


def allow(paths: list[str], caps: list[str], **conditions: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"effect": "allow", "paths": paths, "capabilities": caps}
    if conditions:
        rule["conditions"] = conditions
    return rule


def totp_code(otpauth_uri: str, at: float | None = None) -> str:
    secret_b32 = parse_qs(urlparse(otpauth_uri).query)["secret"][0]
    secret = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    return TOTP(secret, 6, SHA1(), 30, enforce_key_length=False).generate(int(at or time.time())).decode()
