"""Bootstrap and tokens through the gateway: sys/init, auth/token, jwks, whoami."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from structlog.testing import capture_logs

from services.gateway.state import STATE
from services.platform import Platform
from shared.logging import PROCESSORS
from tests.conftest import Api, start_platform
from tests.e2e.test_gateway_envelope import assert_envelope


async def token_for(api: Api, admin: dict[str, Any], **extra: Any) -> dict[str, Any]:
    status, body, headers = await api.request(
        "POST", "/v1/auth/token", token=None,
        json={"client_id": admin["client_id"], "client_secret": admin["client_secret"], **extra})
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    return dict(body)


async def test_init_answers_credentials_once(api: Api, admin: dict[str, Any]) -> None:
    assert admin["tenant_id"].startswith("ten_") and admin["client_id"].startswith("cli_")
    assert admin["client_secret"].startswith("cs_") and admin["token"].count(".") == 2
    status, body, headers = await api.request("POST", "/v1/sys/init", token=None)
    assert_envelope(status, body, headers, "name_conflict")


async def test_concurrent_inits_on_an_empty_system_create_one_root(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    import asyncio

    platform = await start_platform(tmp_path, None, pg_dsn)
    try:
        assert platform.url
        api = Api(platform.url, http)
        results = await asyncio.gather(*(api.request("POST", "/v1/sys/init", token=None) for _ in range(5)))
        assert sorted(r[0] for r in results) == [201, 409, 409, 409, 409]
    finally:
        await platform.close()


async def test_token_by_json_and_by_oauth_form(api: Api, admin: dict[str, Any]) -> None:
    body = await token_for(api, admin)
    assert body["token_type"] == "Bearer" and body["tenant_id"] == admin["tenant_id"]
    assert body["expires_in"] == 3600
    assert set(body["scope"].split()) == {"secrets:read", "secrets:write", "pki", "leases", "webhooks", "events",
                                         "admin"}
    form = {"grant_type": "client_credentials", "client_id": admin["client_id"],
            "client_secret": admin["client_secret"], "scope": "pki secrets:read"}
    status, body, _ = await api.request("POST", "/v1/auth/token", token=None, data=form)
    assert status == 200 and body["scope"] == "secrets:read pki"


async def test_a_token_for_more_scopes_than_allowed_is_refused(api: Api, admin: dict[str, Any]) -> None:
    narrow = await token_for(api, admin, scopes=["secrets:read"])
    status, body, _ = await api.request("GET", "/v1/auth/whoami", token=narrow["access_token"])
    assert status == 200 and body["scopes"] == ["secrets:read"]


@pytest.mark.parametrize("which", ["unknown_client", "wrong_secret", "empty_secret_form"])
async def test_bad_credentials_are_one_401_for_every_cause(api: Api, admin: dict[str, Any], which: str) -> None:
    payload = {
        "unknown_client": {"client_id": "cli_nobody", "client_secret": admin["client_secret"]},
        "wrong_secret": {"client_id": admin["client_id"], "client_secret": admin["client_secret"] + "x"},
        "empty_secret_form": {"client_id": admin["client_id"], "client_secret": "x"},
    }[which]
    status, body, headers = await api.request("POST", "/v1/auth/token", token=None, json=payload)
    err = assert_envelope(status, body, headers, "authentication_required")
    assert err["message"] == "invalid client credentials" and err["details"] == {}


async def test_whoami(api: Api, admin: dict[str, Any]) -> None:
    status, body, _ = await api.request("GET", "/v1/auth/whoami")
    assert status == 200
    assert body["identity"]["name"] == "admin" and body["identity"]["partner_admin"] is True
    assert body["tenant"] == {"id": admin["tenant_id"], "name": "root", "kind": "partner"}
    assert body["expires_at"].endswith("Z")


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def forged_tokens(good: str, platform: Platform) -> dict[str, tuple[str, str]]:
    """name -> (token, expected code)."""
    assert platform.app is not None
    header = jwt.get_unverified_header(good)
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = header["kid"]
    now = int(time.time())
    signer = platform.app[STATE].signer
    real_key = signer._signing[1]  # noqa: SLF001 - a test may sign with the real key
    pub_raw = signer._public[kid].public_bytes_raw()  # noqa: SLF001
    return {
        "alg_none": (f"{b64({'alg': 'none', 'kid': kid})}.{b64(claims)}.", "token_invalid"),
        "hs256_with_public_key": (
            jwt.encode(claims, pub_raw, algorithm="HS256", headers={"kid": kid}), "token_invalid"),
        "wrong_key_same_kid": (
            jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}),
            "token_invalid"),
        "unknown_kid": (
            jwt.encode(claims, real_key, algorithm="EdDSA", headers={"kid": "key_nope"}), "token_invalid"),
        "no_kid": (jwt.encode(claims, real_key, algorithm="EdDSA"), "token_invalid"),
        "tampered_claims": (
            good.split(".")[0] + "." + b64({**claims, "scope": "admin", "tid": "ten_other"}) + "."
            + good.split(".")[2], "token_invalid"),
        "missing_jti": (
            jwt.encode({k: v for k, v in claims.items() if k != "jti"}, real_key, algorithm="EdDSA",
                       headers={"kid": kid}), "token_invalid"),
        "expired": (
            jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, real_key, algorithm="EdDSA",
                       headers={"kid": kid}), "token_expired"),
        "garbage": ("not-a-token", "token_invalid"),
        "three_dots_garbage": ("a.b.c", "token_invalid"),
        "unicode": ("ключ.🔑.x", "token_invalid"),
        # over aiohttp's 8 KiB header limit: refused by the HTTP parser, still the envelope
        "huge": ("a" * 100_000, "invalid_request"),
    }


FORGERIES = ["alg_none", "hs256_with_public_key", "wrong_key_same_kid", "unknown_kid", "no_kid",
             "tampered_claims", "missing_jti", "expired", "garbage", "three_dots_garbage", "huge"]


@pytest.mark.parametrize("name", FORGERIES)
async def test_forged_or_expired_tokens_are_refused(api: Api, platform: Platform, name: str) -> None:
    token, code = forged_tokens(api.token or "", platform)[name]
    status, body, headers = await api.request("GET", "/v1/auth/whoami", token=token)
    assert_envelope(status, body, headers, code)


async def test_non_ascii_authorization_header_is_refused(api: Api) -> None:
    status, body, headers = await api.request(
        "GET", "/v1/auth/whoami", token=None, headers={"Authorization": "Bearer ключ.🔑.x".encode().decode("latin-1")})
    assert_envelope(status, body, headers, "token_invalid")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"])
async def test_missing_bearer_is_authentication_required(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    status, body, hdrs = await api.request("GET", "/v1/auth/whoami", token=None, headers=headers)
    assert_envelope(status, body, hdrs, "authentication_required")


async def test_jwks_publishes_the_key_that_verifies_tokens(api: Api) -> None:
    status, body, _ = await api.request("GET", "/v1/auth/jwks", token=None)
    assert status == 200
    (key,) = body["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert "d" not in key  # never the private half
    raw = base64.urlsafe_b64decode(key["x"] + "==")
    claims = jwt.decode(api.token or "", Ed25519PublicKey.from_public_bytes(raw), algorithms=["EdDSA"])
    assert jwt.get_unverified_header(api.token or "")["kid"] == key["kid"] and claims["tid"].startswith("ten_")


async def test_secrets_are_stored_hashed_and_sealed(
    platform: Platform, admin: dict[str, Any], pg_dsn: str
) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        schema = platform.settings.schema_for("gateway")
        row = await conn.fetchrow(f'SELECT secret_hash FROM "{schema}".identities WHERE client_id = $1',
                                  admin["client_id"])
        # a generated client secret: SHA-256 (fast, see domain.hash_client_secret); passwords: scrypt
        assert row["secret_hash"].startswith("sha256$") and admin["client_secret"] not in row["secret_hash"]
        key = await conn.fetchrow(f'SELECT * FROM "{schema}".signing_keys')
        assert platform.app is not None
        private_raw = platform.app[STATE].signer._signing[1].private_bytes_raw()  # noqa: SLF001
        assert private_raw not in b"".join(v for v in key.values() if isinstance(v, bytes))
    finally:
        await conn.close()


async def test_replicas_share_the_signing_key(
    platform: Platform, admin: dict[str, Any], tmp_path: Path, amqp_url: str, pg_dsn: str,
    http: aiohttp.ClientSession,
) -> None:
    """A second gateway on the same database (same KMS key file) accepts the first one's tokens."""
    second = Platform({**platform.values, "http_port": 0}, pg_dsn, services=("gateway",))
    await second.start()
    try:
        assert second.url
        status, body, _ = await Api(second.url, http).request(
            "GET", "/v1/auth/whoami", token=admin["api"].token)
        assert status == 200 and body["tenant"]["id"] == admin["tenant_id"]
    finally:
        await second.close()


async def test_no_credential_reaches_a_log_line(api: Api, admin: dict[str, Any]) -> None:
    with capture_logs(processors=PROCESSORS[:1]) as logs:
        tok = await token_for(api, admin)
        await api.request("GET", "/v1/auth/whoami", token=tok["access_token"])
        await api.request("POST", "/v1/auth/token", token=None,
                          json={"client_id": admin["client_id"], "client_secret": "cs_wrong_guess"})
        await api.request("GET", "/v1/auth/whoami", token=tok["access_token"][:-3] + "abc")
    text = repr(logs)
    assert logs
    for secret in (admin["client_secret"], tok["access_token"], "cs_wrong_guess",
                   tok["access_token"].split(".")[2]):
        assert secret not in text
