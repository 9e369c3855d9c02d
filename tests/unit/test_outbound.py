"""The outbound guard (api.md §5.5) with a test resolver: addresses, ports, schemes, rebinding."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest

from services.webhooks.ssrf import check_url
from shared.errors import CofferError
from shared.outbound import GuardedResolver, OutboundPolicy, OutboundRefused, check, guarded_connector, parse_url

ZONE = {"public.example": ["93.184.216.34"], "evil.example": ["10.0.0.5"],
        "mixed.example": ["93.184.216.34", "127.0.0.1"], "v6.example": ["2606:2800:220:1::1"],
        "meta.example": ["169.254.169.254"], "sitelocal.example": ["fec0::1"],
        "nat64.example": ["64:ff9b::a00:1"], "nat64-public.example": ["64:ff9b::5db8:d822"]}


async def lookup(host: str, port: int) -> list[str]:
    if host not in ZONE:
        raise socket.gaierror("no such host")
    return ZONE[host]


@pytest.mark.parametrize(("url", "ok"), [
    ("https://public.example/hook", True), ("https://v6.example/hook", True),
    ("https://public.example:8443/hook", True), ("https://public.example:1024/", True),
    ("https://evil.example/hook", False), ("https://mixed.example/hook", False),
    ("https://meta.example/latest/meta-data", False), ("https://unknown.example/", False),
    ("https://sitelocal.example/", False), ("https://nat64.example/", False),
    ("https://nat64-public.example/", False),  # NAT64 is reserved: whatever it wraps, refused
    ("http://public.example/hook", False), ("https://public.example/hook#frag", False),
    ("https://public.example:22/", False), ("https://public.example:25/", False),
    ("https://public.example:1023/", False), ("https://public.example:0/", False),
    ("https://public.example:99999/", False),
])
async def test_every_resolved_address_must_be_public_and_the_port_allowed(url: str, ok: bool) -> None:
    if ok:
        assert await check(url, OutboundPolicy(), lookup)
    else:
        with pytest.raises(OutboundRefused):
            await check(url, OutboundPolicy(), lookup)


async def test_webhooks_answer_a_refusal_as_webhook_url_invalid_without_echoing_credentials() -> None:
    with pytest.raises(CofferError) as err:
        await check_url("https://user:hunter2@public.example/", OutboundPolicy(), lookup)
    assert err.value.code == "webhook_url_invalid" and "hunter2" not in repr(err.value.to_wire())


async def test_operator_allow_list_widens_addresses_and_http_but_not_ports() -> None:
    policy = OutboundPolicy(allowed=(ipaddress.ip_network("10.0.0.0/8"),), allow_http=True)
    assert await check("http://evil.example/hook", policy, lookup) == ["10.0.0.5"]
    with pytest.raises(OutboundRefused):
        await check("http://evil.example:22/", policy, lookup)
    assert OutboundPolicy.from_cidrs(("fec0::/10",), False).permits("fec0::1")


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1", "169.254.169.254", "0.0.0.0",
    "224.0.0.1", "224.0.1.1", "240.0.0.1", "255.255.255.255", "192.0.2.10", "::1", "::", "fc00::1", "fe80::1",
    "fec0::1", "ff02::1", "::ffff:10.0.0.1", "::127.0.0.1", "2002:7f00:1::", "64:ff9b::7f00:1",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo whose client is 10.0.0.1
    "not-an-ip", "",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not OutboundPolicy().permits(address)


def test_parse_url_refuses_malformed_urls() -> None:
    for raw in ("", "not a url", "ftp://x.example/", "https:///nohost", "https://a@x.example/", None, 5,
                "https://x.example/" + "a" * 3000):
        with pytest.raises(OutboundRefused):
            parse_url(raw, OutboundPolicy())


async def test_the_connect_time_resolver_refuses_a_rebound_name() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # public when checked, loopback at connect

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    assert await check("https://rebind.example/", OutboundPolicy(), rebinding)
    with pytest.raises(OSError):
        await GuardedResolver(OutboundPolicy(), rebinding).resolve("rebind.example", 443)


async def test_the_resolver_hands_over_only_checked_addresses_on_allowed_ports() -> None:
    resolved = await GuardedResolver(OutboundPolicy(), lookup).resolve("public.example", 443)
    assert [r["host"] for r in resolved] == ["93.184.216.34"] and resolved[0]["hostname"] == "public.example"
    with pytest.raises(OSError):
        await GuardedResolver(OutboundPolicy(), lookup).resolve("public.example", 22)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8080/", "http://[::1]:8080/", "http://169.254.169.254/latest",
                                 "http://127.0.0.1:8080/"])
async def test_an_ip_literal_is_refused_at_connect_time_without_a_check_first(url: str) -> None:
    """aiohttp hands an IP literal to no resolver: the connector itself refuses it, nothing is connected."""
    async with aiohttp.ClientSession(connector=guarded_connector(OutboundPolicy(allow_http=True))) as http:
        with pytest.raises(aiohttp.ClientConnectorError):
            await http.get(url)


async def test_an_allowed_ip_literal_still_connects() -> None:
    from aiohttp import web

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        policy = OutboundPolicy.from_cidrs(("127.0.0.1/32",), True)
        async with aiohttp.ClientSession(connector=guarded_connector(policy)) as http, \
                http.get(f"http://127.0.0.1:{port}/") as resp:
            assert await resp.text() == "ok"
        async with aiohttp.ClientSession(connector=guarded_connector(policy)) as http:
            with pytest.raises(aiohttp.ClientConnectorError):  # the allow-list widens addresses, not ports
                await http.get("http://127.0.0.1:22/")
    finally:
        await runner.cleanup()
