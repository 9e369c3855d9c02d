"""No engine, backend, DNS provider or webhook reaches the platform's own database, broker or gateway
(issue #27, findings 1 and 2, "Deliver 1").

The review's setting: the operator allowed ``127.0.0.1/32`` for engines and
outbound calls, as an operator allows "the database subnet", and a child
tenant's admin aims Coffer's features at Coffer itself: the PostgreSQL it runs
on (trust auth, as ``postgres``: ``COPY … TO PROGRAM`` ran on the database host),
its broker (``guest/guest`` on the management API minted a broker administrator)
and its gateway. Each is refused through the gateway, in both run modes, with
``invalid_config`` / ``webhook_url_invalid`` that says "not allowed" and no more,
and nothing is stored. Before the fix, the engines were created (201).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from services.platform import Platform
from tests.conftest import Api, initialised, own_platform
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_gateway_envelope import assert_envelope

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]
ALLOWED = ("127.0.0.1/32",)
CAPS = ["read", "list", "write", "delete", "manage", "issue", "revoke", "rotate"]


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(f"own-{request.param}"), pg_dsn,
                            outbound_allowed_cidrs=ALLOWED, engine_allowed_cidrs=ALLOWED) as p:
        yield p


@pytest.fixture(scope="module")
async def child(platform: Platform, http: aiohttp.ClientSession) -> Api:
    """The attacker: the admin of a child tenant, with every scope and a policy over everything."""
    root = await initialised(platform, http)
    status, tenant, _ = await root.request("POST", "/v1/tenants", json={"name": name("child")})
    assert status == 201, tenant
    admin = await identity(root, ["secrets:read", "secrets:write", "pki", "leases", "webhooks", "admin"],
                           [allow(["**"], CAPS)], tenant=tenant["id"])
    api = Api(platform.url, http)
    api.token = admin["token"]
    return api


def _platform_db(pg_dsn: str, host: str = "127.0.0.1") -> str:
    """The platform's own database as an engine's admin URL: ``postgres``, any password (trust auth)."""
    url = URL(pg_dsn)
    return str(url.with_host(host).with_user("postgres").with_password("anything"))


async def _refused(api: Api, code: str, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, answer, headers = await api.request(method, path, json=body)
    err = assert_envelope(status, answer, headers, code)
    text = str(err).lower()
    assert "not allowed" in text, err
    for telling in ("platform", "database", "broker", "gateway", "own"):  # "not allowed", no more
        assert telling not in text, err
    return err


def on_broker(platform: Platform) -> bool:
    """Is this platform on RabbitMQ? (Embedded on the in-process bus, the broker on this host is not its own.)"""
    return platform.settings.amqp_url is not None


async def test_an_engine_aimed_at_the_platforms_own_database_is_refused(child: Api, platform: Platform,
                                                                         pg_dsn: str) -> None:
    for host in ("127.0.0.1", "localhost", "::ffff:127.0.0.1", "0.0.0.0"):
        await _refused(child, "invalid_config", "POST", "/v1/engines", {
            "name": name("own-db"), "type": "postgresql", "config": {"connection_url": _platform_db(pg_dsn, host)}})
    if on_broker(platform):  # the platform's broker's AMQP port, spoken to as if it were Redis
        await _refused(child, "invalid_config", "POST", "/v1/engines", {
            "name": name("own-amqp"), "type": "redis", "config": {"host": "127.0.0.1", "port": 5672, "password": "x"}})
    status, listed, _ = await child.request("GET", "/v1/engines?limit=1000")
    assert status == 200 and not [e for e in listed["items"] if e["name"].startswith("own-")], listed


async def test_an_engine_aimed_at_the_platforms_own_broker_is_refused(child: Api, platform: Platform) -> None:
    if not on_broker(platform):
        pytest.skip("embedded on the in-process bus: this host's RabbitMQ is not the platform's")
    for url in ("http://127.0.0.1:15672", "http://localhost:15672/", "http://127.0.0.1:15692"):
        await _refused(child, "invalid_config", "POST", "/v1/engines", {
            "name": name("own-mq"), "type": "rabbitmq",
            "config": {"management_url": url, "username": "guest", "password": "guest"}})


async def test_webhooks_backends_and_acme_never_reach_the_platform(child: Api, platform: Platform) -> None:
    assert platform.url
    gateway = URL(platform.url)
    broker = "127.0.0.1:15672" if on_broker(platform) else None
    own = [f"{platform.url}/v1/sys/health", f"http://localhost:{gateway.port}/v1/sys/health",
           f"http://127.0.0.1:{URL(platform.dsn).port}/", *([f"http://{broker}/api/overview"] if broker else [])]
    for url in own:
        await _refused(child, "webhook_url_invalid", "POST", "/v1/webhooks", {"url": url})
    status, hooks, _ = await child.request("GET", "/v1/webhooks?limit=1000")
    assert status == 200 and hooks["items"] == [], hooks
    # a federation backend whose upstream Coffer is this very gateway
    await _refused(child, "invalid_config", "POST", "/v1/federation/backends", {
        "name": name("fb"), "type": "coffer", "mount_path": "ext/own",
        "config": {"url": platform.url, "client_id": "c", "client_secret": "s"}})
    # an ACME CA at the gateway, a DNS server at the database
    await _refused(child, "invalid_config", "POST", "/v1/pki/acme/accounts",
                   {"directory_url": f"{platform.url}/dir"})
    await _refused(child, "invalid_config", "POST", "/v1/pki/acme/dns-providers", {
        "name": name("dns"), "type": "rfc2136",
        "config": {"nameserver": f"127.0.0.1:{URL(platform.dsn).port}", "zone": "acme.test", "tsig_key_name": "k",
                   "tsig_secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "tsig_algorithm": "hmac-sha256"}})
