"""The one guard for every call Coffer makes to an address a tenant chose (api.md §5.5).

Webhooks, federation backends, ACME CAs and DNS servers, dynamic-credential engines.
A URL passes when:

- its scheme is ``https`` (``http`` only if the operator allows it), it has a
  host, no credentials, no fragment;
- its port is 80, 443 or 1024–65535 (the allow-list widens addresses, never
  ports: a tenant must not reach SSH, SMTP or a database's privileged port);
- *every* address its host resolves to is public unicast: ``is_global``, not
  multicast, reserved or unspecified, not the deprecated site-local
  ``fec0::/10`` (which Python still calls global), and no IPv4 hidden in an
  IPv6 form (mapped, compatible, 6to4, Teredo) that would not pass on its own;
  NAT64 (``64:ff9b::/96``) is reserved, so refused — unless the operator's
  allow-list names the address.

At connect time ``GuardedResolver`` resolves and checks again and hands the
connector only the checked addresses, so an answer that changes between the
check and the connection (DNS rebinding) never reaches a private address;
``GuardedConnector`` checks the IP literals aiohttp gives no resolver. A
connection through ``guarded_connector`` needs no ``check`` before it.
Callers never follow redirects.

A refusal is ``OutboundRefused`` (with a reason a caller may show); each
caller turns it into its own code (``webhook_url_invalid``, ``invalid_config``…).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

Lookup = Callable[[str, int], Awaitable[list[str]]]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_URL = 2048
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class OutboundRefused(Exception):
    """The guard refused a URL or an address; ``reason`` says why (no URL, no credentials in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def port_allowed(port: int) -> bool:
    """80, 443 and the unprivileged ports; never SSH, SMTP, and the like."""
    return port in (80, 443) or 1024 <= port <= 65535


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses outbound calls may reach: public ones, plus what the operator allows."""

    allowed: tuple[IpNetwork, ...] = ()
    allow_http: bool = False
    #: public addresses too (webhooks); ``False``: only ``allowed`` — dynamic-credential engines, which
    #: live on private networks the operator names, and nowhere else a tenant could aim them
    public: bool = True

    @classmethod
    def from_cidrs(cls, cidrs: tuple[str, ...], allow_http: bool, *, public: bool = True) -> OutboundPolicy:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs), allow_http, public)

    def permits(self, address: str) -> bool:
        """Is ``address`` (a literal IPv4 or IPv6 address) one we may connect to?"""
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return True
        if not self.public:
            return False
        if isinstance(ip, ipaddress.IPv6Address):
            inner = _embedded_ipv4(ip)
            if inner is not None and not self.permits(str(inner)):
                return False
            if ip in _SITE_LOCAL:
                return False
        return ip.is_global and not ip.is_multicast and not ip.is_reserved and not ip.is_unspecified


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _IPV4_COMPATIBLE:  # ::a.b.c.d (deprecated)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


async def system_lookup(host: str, port: int) -> list[str]:
    """Every A and AAAA answer for ``host`` (numeric forms like ``2130706433`` included, as the OS reads them)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def parse_url(raw: object, policy: OutboundPolicy) -> URL:
    """The URL if its form is acceptable (scheme, host, port, no credentials); addresses are ``check``'s."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_URL or any(c.isspace() for c in raw):
        raise OutboundRefused("not a URL")
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        raise OutboundRefused("not a URL") from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if url.scheme not in schemes:
        raise OutboundRefused("scheme must be https")
    if url.user is not None or url.password is not None or "@" in (url.raw_authority or ""):
        raise OutboundRefused("credentials in the URL are not allowed")
    if not url.host:
        raise OutboundRefused("no host")
    if url.fragment:
        raise OutboundRefused("fragments are not sent to servers")
    try:
        port = url.port
    except ValueError:
        raise OutboundRefused("not a URL") from None
    if port is None or not port_allowed(port):
        raise OutboundRefused("port must be 80, 443 or 1024-65535")
    return url


async def check(raw: object, policy: OutboundPolicy, lookup: Lookup = system_lookup) -> list[str]:
    """The addresses ``raw`` may be reached at; ``OutboundRefused`` if any is not permitted."""
    url = parse_url(raw, policy)
    try:
        addresses = await lookup(url.raw_host or "", url.port or 443)
    except (OSError, UnicodeError):
        raise OutboundRefused("host does not resolve") from None
    if not addresses:
        raise OutboundRefused("host does not resolve")
    if any(not policy.permits(a) for a in addresses):
        raise OutboundRefused("host resolves to a private, loopback, link-local or reserved address")
    return addresses


async def check_host(host: object, port: object, policy: OutboundPolicy, lookup: Lookup = system_lookup, *,
                     protocol_port: int | None = None) -> str:
    """The address to connect to for ``host:port`` (a non-URL target: a database, Redis, a DNS server); every
    address the host resolves to must be permitted, and the caller connects to the one returned, not to the
    name. ``protocol_port``: the one privileged port this protocol lives on (53 for DNS), allowed too."""
    if not isinstance(host, str) or not host or len(host) > 253 or any(c.isspace() or c in "/@?#" for c in host):
        raise OutboundRefused("not a host name")
    if not isinstance(port, int) or isinstance(port, bool) or not (port_allowed(port) or port == protocol_port):
        raise OutboundRefused("port must be 80, 443 or 1024-65535" if protocol_port is None
                              else f"port must be {protocol_port} or 1024-65535")
    try:
        addresses = await lookup(host, port)
    except (OSError, UnicodeError):
        raise OutboundRefused("host does not resolve") from None
    if not addresses:
        raise OutboundRefused("host does not resolve")
    if any(not policy.permits(a) for a in addresses):
        raise OutboundRefused("host resolves to an address the operator has not allowed")
    return addresses[0]


class GuardedResolver(AbstractResolver):
    """aiohttp resolver: only checked addresses ever reach the connector."""

    def __init__(self, policy: OutboundPolicy, lookup: Lookup = system_lookup) -> None:
        self.policy = policy
        self.lookup = lookup

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        if not port_allowed(port):
            raise OSError(f"refusing to connect to port {port}")
        addresses = await self.lookup(host, port)
        if not addresses or any(not self.policy.permits(a) for a in addresses):
            raise OSError(f"refusing to connect to {host}: address not permitted")
        return [
            {"hostname": host, "host": a, "port": port, "family": socket.AF_INET6 if ":" in a else socket.AF_INET,
             "proto": 0, "flags": socket.AI_NUMERICHOST}
            for a in addresses
        ]

    async def close(self) -> None:
        return None


class GuardedConnector(aiohttp.TCPConnector):
    """aiohttp hands a host that is an IP literal to no resolver: checked here, so ``https://10.0.0.1/`` is
    refused at connect time like a name that resolves there (a ``ClientConnectorError``, as any refusal)."""

    def __init__(self, policy: OutboundPolicy, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._policy = policy

    async def _resolve_host(self, host: str, port: int, traces: object = None) -> list[ResolveResult]:
        try:
            ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return await super()._resolve_host(host, port, traces)  # type: ignore[arg-type]  # the resolver
        if not port_allowed(port) or not self._policy.permits(host):
            raise OSError(f"refusing to connect to {host}:{port}: address not permitted")
        return await super()._resolve_host(host, port, traces)  # type: ignore[arg-type]


def guarded_connector(policy: OutboundPolicy, lookup: Lookup = system_lookup, **kwargs: object) -> aiohttp.TCPConnector:
    """A connector whose every connection goes to a checked address: names through ``GuardedResolver`` (no
    DNS cache), IP literals checked by ``GuardedConnector`` itself."""
    return GuardedConnector(policy, resolver=GuardedResolver(policy, lookup), use_dns_cache=False, **kwargs)
