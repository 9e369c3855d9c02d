"""The platform's own endpoints are never outbound targets, whatever the allow-list (issue #27, finding 1).

The operator here allows every address (``0.0.0.0/0`` and ``::/0``), the widest
allow-list there is: only the platform-endpoint rule stands between a tenant
and the platform's database (5432), broker (5672, management 15672) and
gateway (8700) on this host. Hypothesis writes the addresses every way a
resolver or a connector would still take them to this host; names resolve
through the real system resolver (numeric forms, ``localhost``, a trailing
dot) or a zone of the test's own (a DNS name that resolves to the platform).
"""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.config import Settings, database_hosts, split_endpoint
from shared.outbound import (
    GuardedResolver,
    OutboundPolicy,
    OutboundRefused,
    PlatformEndpoints,
    check,
    check_host,
    guarded_connector,
    host_addresses,
    platform_endpoints,
    system_lookup,
)

PLATFORM_PORTS = (5432, 5672, 15672, 8700)
OPEN = ("0.0.0.0/0", "::/0")


async def endpoints() -> PlatformEndpoints:
    """What a platform on this host with the test suite's own URLs refuses."""
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:5432/test",
                        amqp_url="amqp://guest:guest@127.0.0.1:5672/", http_port=8700)
    return await platform_endpoints(settings.platform_targets())


def policy(platform: PlatformEndpoints) -> OutboundPolicy:
    return OutboundPolicy.from_cidrs(OPEN, True, public=False, platform=platform)


def _octets(ip: ipaddress.IPv4Address) -> list[int]:
    return list(ip.packed)


@st.composite
def ipv4_spellings(draw: st.DrawFn) -> str:
    """A loopback address (or this host's own IPv4 address) as inet_aton, URLs and aiohttp still read it."""
    own = [a for a in host_addresses() if a.version == 4]
    ip = draw(st.sampled_from([ipaddress.IPv4Address("127.0.0.1"), *own])
              | st.builds(lambda n: ipaddress.IPv4Address((127 << 24) | n), st.integers(1, 2**24 - 2))
              | st.just(ipaddress.IPv4Address("0.0.0.0")))
    octets = _octets(ip)
    form = draw(st.sampled_from(["dotted", "decimal", "octal", "hex", "mixed", "short"]))
    if form == "decimal":
        return str(int(ip))
    if form == "octal":
        return ".".join(f"0{o:o}" for o in octets)
    if form == "hex":
        return ".".join(f"0x{o:x}" for o in octets)
    if form == "mixed":
        return ".".join(draw(st.sampled_from([str(o), f"0{o:o}", f"0x{o:X}"])) for o in octets)
    if form == "short" and octets[1] == 0 and octets[2] == 0:
        return f"{octets[0]}.{octets[3]}"  # 127.1
    return str(ip)


@st.composite
def ipv6_spellings(draw: st.DrawFn) -> str:
    """This host in IPv6 clothes: ``::1``, ``::``, and IPv4 mapped, compatible, 6to4 or NAT64."""
    v4 = ipaddress.IPv4Address(draw(st.sampled_from(["127.0.0.1", "127.0.0.2", "127.255.0.9", "0.0.0.0"])))
    value = draw(st.sampled_from([
        "::1", "::", "0:0:0:0:0:0:0:1", f"::ffff:{v4}", f"::FFFF:{v4}",
        f"::ffff:{int(v4) >> 16:x}:{int(v4) & 0xffff:x}", f"::{v4}",
        str(ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80))),
        str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4))),
        *(str(a) for a in host_addresses() if a.version == 6 and not a.is_link_local),
    ]))
    return value


NAMES = st.sampled_from(["localhost", "localhost.", "LOCALHOST", "LocalHost."])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=ipv4_spellings() | ipv6_spellings() | NAMES, port=st.sampled_from(PLATFORM_PORTS))
async def test_no_spelling_of_a_platform_endpoint_passes(host: str, port: int) -> None:
    platform = await endpoints()
    guard = policy(platform)
    literal = f"[{host}]" if ":" in host else host
    try:  # what the OS makes of it: if it does not resolve at all, nothing could be reached either
        resolved = await system_lookup(host, port)
    except OSError:
        resolved = []
    if resolved:
        assert all(platform.reaches(a, port) for a in resolved), (host, resolved)
        for call in (check(f"http://{literal}:{port}/", guard), check_host(host, port, guard),
                     GuardedResolver(guard).resolve(host, port)):
            with pytest.raises((OutboundRefused, OSError)):
                await call
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    assert platform.reaches(host, port), host  # a literal is refused whether or not the OS takes it


@pytest.mark.parametrize("port", PLATFORM_PORTS)
async def test_a_name_that_resolves_to_the_platform_is_refused(port: int) -> None:
    """A tenant's DNS name pointing at the platform (or some of its answers doing so)."""
    zone = {"db.tenant.example": ["127.0.0.1"], "mixed.tenant.example": ["10.9.9.9", "::ffff:127.0.0.1"],
            "v6.tenant.example": ["::1"]}

    async def lookup(host: str, _: int) -> list[str]:
        if host.rstrip(".") not in zone:
            raise socket.gaierror("no such host")
        return zone[host.rstrip(".")]

    guard = policy(await endpoints())
    for name in (*zone, "db.tenant.example."):
        with pytest.raises(OutboundRefused) as refused:
            await check_host(name, port, guard, lookup)
        assert refused.value.reason == "host resolves to an address that is not allowed"
        with pytest.raises(OutboundRefused):
            await check(f"http://{name}:{port}/", guard, lookup)
        with pytest.raises(OSError):
            await GuardedResolver(guard, lookup).resolve(name, port)


async def test_other_ports_of_the_same_host_stay_reachable_when_allowed() -> None:
    """The rule is by address *and* port: a second PostgreSQL cluster on 5433 is a fine engine target."""
    guard = policy(await endpoints())
    assert await check_host("127.0.0.1", 5433, guard) == "127.0.0.1"
    assert await check_host("localhost", 6379, guard) in ("127.0.0.1", "::1")
    assert await check("http://127.0.0.1:15673/api", guard) == ["127.0.0.1"]
    for port in (5432, 5672, 15672, 15671, 15692, 25672, 4369, 8700):
        with pytest.raises(OutboundRefused):
            await check_host("127.0.0.1", port, guard)


async def test_the_connector_refuses_a_platform_ip_literal_at_connect_time() -> None:
    """aiohttp gives IP literals no resolver: the connector checks them against the platform too."""
    guard = OutboundPolicy.from_cidrs(OPEN, True, platform=await endpoints())
    async with aiohttp.ClientSession(connector=guarded_connector(guard)) as http:
        for url in ("http://127.0.0.1:15672/api/overview", "http://[::ffff:127.0.0.1]:15672/api/overview",
                    "http://[::1]:8700/v1/sys/health", "http://0.0.0.0:5432/"):
            with pytest.raises(aiohttp.ClientConnectorError):
                await http.get(url)


async def test_remote_platform_endpoints_compare_by_address_and_port() -> None:
    """A database elsewhere (10.0.0.7:5432): that address and port refused, its other ports and this host's
    loopback on 5432 not (they are not the platform's)."""
    settings = Settings(database_url="postgresql://coffer@10.0.0.7:5432/coffer",
                        amqp_url="amqps://u:p@10.0.0.8/", platform_endpoints="10.0.0.9,[fd00::5]:6432")
    platform = await platform_endpoints(settings.platform_targets())
    assert platform.reaches("10.0.0.7", 5432) and platform.reaches("::ffff:10.0.0.7", 5432)
    assert not platform.reaches("10.0.0.7", 5433) and not platform.reaches("127.0.0.1", 5432)
    assert platform.reaches("10.0.0.8", 5671) and platform.reaches("10.0.0.8", 15672)
    assert platform.reaches("10.0.0.9", 1234) and platform.reaches("10.0.0.9", 65000)  # every port
    assert platform.reaches("fd00::5", 6432) and not platform.reaches("fd00::5", 6433)
    assert platform.reaches("not-an-address", 80)  # only literals are ever compared; anything else is refused


def test_endpoint_and_dsn_parsing() -> None:
    assert split_endpoint("db.internal:6432") == ("db.internal", 6432)
    assert split_endpoint("[::1]:5432") == ("::1", 5432) and split_endpoint("fd00::1") == ("fd00::1", None)
    for bad in ("", "a b", "h:0", "h:99999", "h:x", "[::1]x", "user@h:1", "h/x"):
        with pytest.raises(ValueError):
            split_endpoint(bad)
    assert database_hosts("postgresql://u:p@h1:5432,h2/db") == [("h1", 5432), ("h2", 5432)]
    assert database_hosts("postgresql://u@/db?host=/run/postgresql&port=5433") == [("/run/postgresql", 5433)]
    assert database_hosts("postgresql:///db") == [("localhost", 5432)]
    with pytest.raises(ValueError):
        Settings(platform_endpoints="h:99999")


async def test_a_platform_name_that_does_not_resolve_stops_the_start() -> None:
    with pytest.raises(SystemExit, match="does not resolve"):
        await platform_endpoints([("no-such-host.invalid", 5432)])
