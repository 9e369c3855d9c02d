"""The sealed gateway's answers (services/sealed.py, api.md §11), in process on a real socket.

Every route and method answers the envelope with the gateway's headers; health says ``sealed``; shares
are bounded, refused without losing progress, and rate-limited per address; shares never reach a log
line (tests/conftest.py checks every line of the run).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.gateway.settings import GatewaySettings
from services.sealed import SealedServer, sealed_banner
from shared.custody import MAX_ATTEMPTS_KEPT, Custody, CustodyRefused, check
from shared.seal import ShamirSeal, initialise
from tests.conftest import remember_secret

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
async def sealed(tmp_path: Path) -> AsyncIterator[tuple[str, list[str], Custody]]:
    settings = GatewaySettings(seal="shamir", data_dir=tmp_path, http_port=0, rate_limits="auth=8/m")
    _, shares = await initialise(settings.sealed_keyring_file, ShamirSeal(5, 3))
    assert shares is not None
    for share in shares:
        remember_secret(share)
    custody = Custody(settings)
    custody.start()
    server = SealedServer(custody, settings)
    url = await server.start()
    yield url, shares, custody
    await server.close()
    await custody.close()


async def call(url: str, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
    async with aiohttp.ClientSession() as http, http.request(method, url + path, **kw) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


def assert_headers(headers: Any) -> None:
    assert headers["Cache-Control"] == "no-store" and headers["Server"] == "coffer"
    assert all(h in headers for h in RATE_HEADERS) and headers["Connection"] == "close"


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/secrets/a/b"), ("PUT", "/v1/secrets/a/b"), ("DELETE", "/v1/tenants/ten_x"), ("GET", "/metrics"),
    ("POST", "/v1/auth/token"), ("GET", "/v1/sys/unseal"), ("POST", "/v1/sys/seal"), ("GET", "/"),
    ("PATCH", "/v1/sys/seal-status"), ("GET", "/v1/openapi.json"), ("POST", "/v1/sys/kms:rotate")])
async def test_every_other_call_is_the_sealed_envelope(sealed: tuple[str, list[str], Custody], method: str,
                                                       path: str) -> None:
    url, _, _ = sealed
    status, body, headers = await call(url, method, path, headers={"X-Request-ID": "mine-1"})
    assert status == 503 and set(body) == {"error"}, body
    assert body["error"]["code"] == "service_unavailable" and body["error"]["request_id"] == "mine-1"
    assert body["error"]["details"] == {"sealed": True, "type": "shamir", "reason": "awaiting_shares"}
    assert headers["X-Request-ID"] == "mine-1"
    assert_headers(headers)
    status, body, headers = await call(url, method, path, headers={"X-Request-ID": "not sane ☃"})
    assert headers["X-Request-ID"].startswith("req_") and body["error"]["request_id"] == headers["X-Request-ID"]


async def test_health_status_and_init(sealed: tuple[str, list[str], Custody]) -> None:
    url, _, _ = sealed
    status, body, headers = await call(url, "GET", "/v1/sys/health")
    assert status == 503 and body["status"] == "sealed" and body["sealed"] is True and body["type"] == "shamir"
    assert body["reason"] == "awaiting_shares" and body["error"]["request_id"] == headers["X-Request-ID"]
    assert_headers(headers)
    status, body, _ = await call(url, "GET", "/v1/sys/seal-status")
    assert (status, body) == (200, {"sealed": True, "type": "shamir", "initialized": True, "progress": 0,
                                    "threshold": 3, "reason": "awaiting_shares", "message": body["message"]})
    status, body, _ = await call(url, "POST", "/v1/sys/init", json={})
    assert (status, body["error"]["code"]) == (409, "name_conflict")


async def test_unseal_bounds_refusals_and_rate_limit(sealed: tuple[str, list[str], Custody]) -> None:
    url, shares, custody = sealed
    status, body, _ = await call(url, "POST", "/v1/sys/unseal", json={"share": shares[0]})
    assert (status, body) == (200, {"sealed": True, "progress": 1, "threshold": 3})
    raw = bytearray(base64.b64decode(shares[1]))
    raw[10] ^= 0xFF
    status, body, _ = await call(url, "POST", "/v1/sys/unseal", json={"share": base64.b64encode(raw).decode()})
    assert status == 400 and body["error"]["details"] == {"reason": "wrong_share", "progress": 1, "threshold": 3}
    status, body, _ = await call(url, "POST", "/v1/sys/unseal", json={"share": shares[0]})
    assert status == 400 and body["error"]["details"]["reason"] == "repeated_share"
    status, body, _ = await call(url, "POST", "/v1/sys/unseal", json={"share": "x" * 129})
    assert status == 422 and body["error"]["code"] == "validation_error"
    status, body, _ = await call(url, "POST", "/v1/sys/unseal", data=b'{"share": "' + b"A" * 5000 + b'"}',
                                 headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"]["code"] == "invalid_request"  # the body bound (4 KiB)
    status, body, _ = await call(url, "POST", "/v1/sys/unseal", json={"share": 12})
    assert status == 422
    for share in shares:  # no share in any answer
        assert share not in repr(body)
    # auth=8/m per address: 6 spent above, the 7th and 8th pass, then 429 with Retry-After
    for _ in range(2):
        await call(url, "POST", "/v1/sys/unseal", json={"share": "AAAA"})
    status, body, headers = await call(url, "POST", "/v1/sys/unseal", json={"share": shares[1]})
    assert status == 429 and body["error"]["code"] == "rate_limited" and "Retry-After" in headers
    assert custody.sealed and custody.unsealer is not None and custody.unsealer.progress == 1
    attempts, _ = custody.take_attempts()
    assert [a.reason for a in attempts] == ["share_accepted", "wrong_share", "repeated_share", "malformed_share",
                                            "malformed_share"]


async def test_the_threshold_unseals_and_the_banner_says_how(sealed: tuple[str, list[str], Custody]) -> None:
    url, shares, custody = sealed
    assert "/v1/sys/unseal" in sealed_banner(url, custody) and "3 key holders" in sealed_banner(url, custody)
    for i, share in enumerate(shares[2:5]):
        status, body, _ = await call(url, "POST", "/v1/sys/unseal", json={"share": share})
        assert status == 200 and body["sealed"] is (i < 2), body
    assert not custody.sealed and custody.unsealed.is_set() and custody.kms is not None and custody.how == "shares"
    custody.seal()
    assert custody.sealed and custody.kms is None and custody.unsealer is not None and custody.unsealer.progress == 0


def test_starts_that_would_lose_keys_are_refused(tmp_path: Path) -> None:
    (tmp_path / "kms.key").write_text("{}")
    with pytest.raises(CustodyRefused, match="python -m shared.seal migrate --to shamir"):
        check(GatewaySettings(seal="shamir", data_dir=tmp_path))
    # shamir in distributed mode: accepted (the gateway hands each process its key: shared/handover.py)
    assert check(GatewaySettings(seal="shamir", data_dir=tmp_path / "other"), distributed=True) is None
    check(GatewaySettings(seal="file", data_dir=tmp_path))  # today's installation: nothing to say
    with pytest.raises(CustodyRefused, match="COFFER_PKCS11_PIN"):
        check(GatewaySettings(seal="pkcs11", data_dir=tmp_path / "p", pkcs11_library="/x.so", pkcs11_token="t",
                              pkcs11_key="k"))
    with pytest.raises(CustodyRefused, match="COFFER_AWSKMS_KEY_ID"):
        check(GatewaySettings(seal="awskms", data_dir=tmp_path / "a"))


async def test_a_sealed_keyring_under_the_file_seal_is_refused(tmp_path: Path) -> None:
    await initialise(tmp_path / "keyring.sealed", ShamirSeal(1, 1))
    with pytest.raises(CustodyRefused, match="--to file"):
        check(GatewaySettings(seal="file", data_dir=tmp_path))
    with pytest.raises(CustodyRefused, match="sealed with shamir, not awskms"):
        check(GatewaySettings(seal="awskms", data_dir=tmp_path, awskms_key_id="k"))


def test_a_flood_of_junk_shares_cant_push_the_key_holders_attempts_out_of_the_audit(tmp_path: Path) -> None:
    """The seal attack review: 1,210 junk shares from 22 addresses, then the real ones: the audit kept the first
    1,000 junk entries and none of the key holders'. The latest are kept now, the oldest counted as dropped."""
    custody = Custody(GatewaySettings(seal="shamir", data_dir=tmp_path))
    for i in range(MAX_ATTEMPTS_KEPT + 210):
        custody.note_attempt(outcome="invalid_request", reason="wrong_share", status=400,
                             client_ip=f"127.0.0.{i % 22 + 2}", request_id=f"req_junk{i}")
    custody.note_attempt(outcome="ok", reason="unsealed", status=200, client_ip="10.0.0.7", request_id="req_holder")
    kept, dropped = custody.take_attempts()
    assert len(kept) == MAX_ATTEMPTS_KEPT and dropped == 211
    assert kept[-1].request_id == "req_holder" and kept[0].request_id == "req_junk211"
