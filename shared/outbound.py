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
  allow-list names the address;
- and, whatever the allow-list says, no address and port is one of the
  platform's own (``PlatformEndpoints``: its database, its broker's AMQP,
  management and clustering ports, the gateway's listeners, and what the
  operator names in ``COFFER_PLATFORM_ENDPOINTS``). Tenants configure engines,
  webhooks and backends; an allow-list written for "the database subnet" must
  not hand them the platform's own database or broker. Addresses compare
  after unwrapping IPv4 from IPv6 forms, and every address of this host
  (loopback, unspecified, its interfaces) counts as one: a server listening
  on ``127.0.0.1`` may listen on all of them.

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
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

Lookup = Callable[[str, int], Awaitable[list[str]]]
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL = 2048
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: what a refusal says, whatever the reason among addresses: the caller learns "not allowed", no more
NOT_ALLOWED = "host resolves to an address that is not allowed"


class OutboundRefused(Exception):
    """The guard refused a URL or an address; ``reason`` says why (no URL, no credentials in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def port_allowed(port: int) -> bool:
    """80, 443 and the unprivileged ports; never SSH, SMTP, and the like."""
    return port in (80, 443) or 1024 <= port <= 65535


#: the ports of a RabbitMQ node beside AMQP: management (http, https), Prometheus, clustering, epmd
BROKER_PORTS = (15672, 15671, 15692, 25672, 4369)
_LOCAL = "local"  # every address of this host, as one


def _literal(address: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return None


def unwrap(ip: IpAddress) -> IpAddress:
    """The IPv4 address an IPv6 form carries (mapped, compatible, 6to4, Teredo, NAT64), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return inner
    return ip


def host_addresses() -> frozenset[IpAddress]:
    """This host's own interface addresses, as Linux lists them (none elsewhere): best effort."""
    found: set[IpAddress] = set()
    try:  # IPv4: the LOCAL routes of the kernel's FIB ("/32 host LOCAL" follows the address)
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for above, line in zip(lines, lines[1:], strict=False):
            if line.strip() == "/32 host LOCAL":
                ip = _literal(above.strip().removeprefix("|-- "))
                if ip is not None:
                    found.add(ip)
    except OSError:
        pass
    try:  # IPv6: one address per line, 32 hex digits first
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0] if line.split() else ""
            if len(raw) == 32:
                found.add(ipaddress.IPv6Address(int(raw, 16)))
    except (OSError, ValueError):
        pass
    return frozenset(found)


@dataclass
class PlatformEndpoints:
    """The platform's own addresses and ports, which no tenant-configured call may reach.

    Filled at start (``add_host`` resolves names once) and by the gateway when it
    listens; ``port=None`` is every port of an address. Every address of this
    host is one (``_LOCAL``): a database on ``127.0.0.1`` is as near on the host's
    LAN address, and on ``0.0.0.0``.
    """

    entries: set[tuple[object, int | None]] = field(default_factory=set)
    #: this host's own addresses (``platform_endpoints`` reads them once); an empty set of endpoints needs none
    local: frozenset[IpAddress] = frozenset()

    def _key(self, ip: IpAddress) -> object:
        for form in (ip, unwrap(ip)):  # ::1 and :: lie inside ::/96 too: this host before any unwrapping
            if form.is_loopback or form.is_unspecified or form in self.local:
                return _LOCAL
        return unwrap(ip)

    def add(self, address: str, port: int | None) -> None:
        ip = _literal(address)
        if ip is None:
            raise ValueError(f"not an IP address: {address!r}")
        self.entries.add((self._key(ip), port))

    async def add_host(self, host: str, port: int | None, lookup: Lookup | None = None) -> None:
        """``host`` (a name, a literal, or a Unix socket directory: this host) at ``port``."""
        if not host or host.startswith("/") or host.lower().rstrip(".") == "localhost":
            self.entries.add((_LOCAL, port))
            return
        if _literal(host) is not None:
            self.add(host, port)
            return
        for address in await (lookup or system_lookup)(host, port or 0):
            self.add(address, port)

    def reaches(self, address: str, port: int) -> bool:
        """Is ``address:port`` one of the platform's own? (Anything not an IP literal is treated as if so.)"""
        ip = _literal(address)
        if ip is None:
            return True
        key = self._key(ip)
        return (key, port) in self.entries or (key, None) in self.entries


async def platform_endpoints(targets: Iterable[tuple[str, int | None]],
                             lookup: Lookup | None = None) -> PlatformEndpoints:
    """The endpoints ``targets`` (host, port) resolve to; a name that doesn't resolve stops the start."""
    endpoints = PlatformEndpoints(local=host_addresses())
    for host, port in targets:
        try:
            await endpoints.add_host(host, port, lookup)
        except (OSError, UnicodeError) as exc:
            raise SystemExit(f"coffer: the platform endpoint {host!r} does not resolve ({type(exc).__name__}): "
                             "it could not be kept out of reach of outbound calls") from None
    return endpoints


@dataclass(frozen=True)
class OutboundPolicy:
    """Which addresses outbound calls may reach: public ones, plus what the operator allows, never the
    platform's own endpoints."""

    allowed: tuple[IpNetwork, ...] = ()
    allow_http: bool = False
    #: public addresses too (webhooks); ``False``: only ``allowed`` — dynamic-credential engines, which
    #: live on private networks the operator names, and nowhere else a tenant could aim them
    public: bool = True
    #: the platform's own addresses: refused whatever ``allowed`` says (shared, filled as the platform starts)
    platform: PlatformEndpoints = field(default_factory=PlatformEndpoints, compare=False, repr=False)

    @classmethod
    def from_cidrs(cls, cidrs: tuple[str, ...], allow_http: bool, *, public: bool = True,
                   platform: PlatformEndpoints | None = None) -> OutboundPolicy:
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs), allow_http, public,
                   platform if platform is not None else PlatformEndpoints())

    def permits_endpoint(self, address: str, port: int) -> bool:
        """May we connect to ``address:port``? ``permits`` and not one of the platform's own endpoints."""
        return self.permits(address) and not self.platform.reaches(address, port)

    def permits(self, address: str) -> bool:
        """Is ``address`` (a literal IPv4 or IPv6 address) one we may connect to (the port aside)?"""
        ip = _literal(address)
        if ip is None:
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


_PUBLIC_ONLY = OutboundPolicy()


def is_public(address: str) -> bool:
    """Would ``address`` pass on public rules alone, with no allow-list? A caller may show what such a
    target answered; what was reached only through the operator's private allow-list it keeps to itself."""
    return _PUBLIC_ONLY.permits(address)


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
    port = url.port or 443
    if any(not policy.permits_endpoint(a, port) for a in addresses):
        raise OutboundRefused(NOT_ALLOWED)
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
    if any(not policy.permits_endpoint(a, port) for a in addresses):
        raise OutboundRefused(NOT_ALLOWED)
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
        if not addresses or any(not self.policy.permits_endpoint(a, port) for a in addresses):
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
        if not port_allowed(port) or not self._policy.permits_endpoint(host, port):
            raise OSError(f"refusing to connect to {host}:{port}: address not permitted")
        return await super()._resolve_host(host, port, traces)  # type: ignore[arg-type]


def guarded_connector(policy: OutboundPolicy, lookup: Lookup = system_lookup, **kwargs: object) -> aiohttp.TCPConnector:
    """A connector whose every connection goes to a checked address: names through ``GuardedResolver`` (no
    DNS cache), IP literals checked by ``GuardedConnector`` itself."""
    return GuardedConnector(policy, resolver=GuardedResolver(policy, lookup), use_dns_cache=False, **kwargs)
