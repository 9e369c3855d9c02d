"""ACME CAs and DNS servers that can't be used read alike (issue #27, finding 6), through the gateway in both
run modes: a closed port, one that accepts and closes at once, one that never answers and an HTTP server that
answers 405 — all on 127.0.0.1, reached only through the operator's private allow-list — give one code, one
message and the same details as an account's directory or a DNS provider's nameserver. The cause is in the
server's log, not in the answer."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.platform import Platform
from tests.conftest import Api, initialised, own_platform
from tests.e2e.iam_helpers import name
from tests.e2e.test_acme import ACME_SETTINGS
from tests.e2e.test_federation_reach import method_not_allowed
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_webhooks_answers import three_ports


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn, rpc_timeout=30.0,
                            **ACME_SETTINGS) as p:  # acme_timeout 2 s: the silent port's wait
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


async def targets() -> AsyncIterator[dict[str, str]]:
    async with three_ports() as urls, method_not_allowed() as answering:
        yield {**{kind: url.removesuffix("/hook") for kind, url in urls.items()}, "405": answering}


def answers(seen: dict[str, tuple[Any, ...]], expected: tuple[Any, ...]) -> None:
    assert all(v == expected for v in seen.values()), seen


async def test_closed_silent_hung_up_and_405_acme_cas_read_alike(api: Api) -> None:
    async for hosts in targets():
        seen = {}
        for target, base in hosts.items():
            status, body, headers = await api.request("POST", "/v1/pki/acme/accounts",
                                                      json={"directory_url": f"{base}/dir"})
            err = assert_envelope(status, body, headers, "backend_error")
            seen[target] = (status, err["code"], err["message"], sorted(err.get("details", {}).items()))
        answers(seen, (502, "backend_error", "could not connect to the ACME CA", []))


async def test_closed_silent_hung_up_and_http_dns_servers_read_alike(api: Api) -> None:
    secret = base64.b64encode(b"k" * 32).decode()
    async for hosts in targets():
        seen = {}
        for target, base in hosts.items():
            status, body, headers = await api.request("POST", "/v1/pki/acme/dns-providers", json={
                "name": name("dns"), "type": "rfc2136", "config": {
                    "nameserver": base.removeprefix("http://"), "zone": "acme.test", "tsig_key_name": "coffer-update",
                    "tsig_secret": secret, "tsig_algorithm": "hmac-sha256"}})
            err = assert_envelope(status, body, headers, "invalid_config")
            seen[target] = (status, err["code"], err["message"], sorted(err.get("details", {}).items()))
            assert secret not in str(body)
        answers(seen, (400, "invalid_config", "could not connect to the DNS server", [("field", "config")]))
