"""DNS-01 records through RFC 2136 dynamic updates signed with TSIG (RFC 8945), with dnspython.

A provider is a zone and the server that is its primary. Its config is
checked when it is created by a TSIG-signed SOA query: the server must know
the key (a wrong secret fails the signature) and answer authoritatively for
the zone. The server's address goes through the outbound guard like any
address a tenant chose, with DNS's own port 53 allowed beside 1024–65535.

Records are written and removed over TCP (an update with a few TXT records
can outgrow a UDP answer, and TCP can't be spoofed off-path). "Propagated"
means the primary answers the TXT values; the CA may ask a secondary, which
NOTIFY keeps close behind.

A server that could not be used reads "could not connect to the DNS server"
whatever happened — refused, closed at once, silent, an answer that is no
DNS (issue #27: the nameserver is a tenant's choice, and the error must not
tell closed, open and silent ports of the operator's networks apart); the
cause is logged. What a DNS server answered (TSIG errors, an rcode) is said.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import structlog

from shared.contracts.acme import Rfc2136Config
from shared.outbound import OutboundPolicy, OutboundRefused, check_host
from shared.reach import COULD_NOT_CONNECT, cause

log = structlog.get_logger("coffer.pki.acme")
TIMEOUT = 10.0
TTL = 60
#: what a DNS server that could not be used reads, whatever happened
DNS_UNREACHABLE = f"{COULD_NOT_CONNECT} to the DNS server"


class DnsFailed(Exception):
    """The server refused or failed an update or a query; ``reason`` names the DNS error (no secret)."""

    def __init__(self, reason: str, *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        #: the server could not be reached (try again later), as opposed to a refusal
        self.transient = transient


def split_nameserver(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address → (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("nameserver: the port is not a number from 1 to 65535")
    return host, int(port)


@dataclass(frozen=True)
class Rfc2136:
    """One provider, ready to use: its zone, its server's checked address, its TSIG key."""

    zone: dns.name.Name
    address: str
    port: int
    key: dns.tsig.Key
    #: seconds a query or an update may take
    timeout: float = TIMEOUT

    @classmethod
    async def open(cls, config: Rfc2136Config, policy: OutboundPolicy, timeout: float = TIMEOUT) -> Rfc2136:
        """Check the config's form and the server's address (``ValueError`` / ``OutboundRefused``)."""
        host, port = split_nameserver(config.nameserver)
        try:
            zone = dns.name.from_text(config.zone)
            key_name = dns.name.from_text(config.tsig_key_name)
        except dns.exception.DNSException:
            raise ValueError("zone and tsig_key_name must be DNS names") from None
        try:
            secret = base64.b64decode(config.tsig_secret, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("tsig_secret must be base64 (as tsig-keygen writes it)") from None
        if not secret:
            raise ValueError("tsig_secret is empty")
        address = await check_host(host, port, policy, protocol_port=53)
        return cls(zone, address, port, dns.tsig.Key(key_name, secret, config.tsig_algorithm), timeout)

    async def _ask(self, message: dns.message.Message) -> dns.message.Message:
        message.use_tsig(self.key, algorithm=self.key.algorithm)
        try:
            answer = await dns.asyncquery.tcp(message, self.address, port=self.port, timeout=self.timeout)
        except dns.tsig.PeerBadKey:
            raise DnsFailed("the server does not know the TSIG key (BADKEY)") from None
        except dns.tsig.PeerBadSignature:
            raise DnsFailed("the server rejected the TSIG signature (BADSIG)") from None
        except dns.tsig.BadSignature:
            raise DnsFailed("the server's answer failed the TSIG check (wrong secret?)") from None
        except dns.tsig.PeerError as exc:
            raise DnsFailed(f"the server refused the TSIG signature ({type(exc).__name__})") from None
        except (OSError, EOFError, dns.exception.DNSException) as exc:  # dns.exception.Timeout among them
            log.warning("acme_dns_unreachable", zone=self.zone.to_text(), cause=cause(exc))
            raise DnsFailed(DNS_UNREACHABLE, transient=True) from None
        return answer

    async def check(self) -> None:
        """A signed SOA query: the key is known and right, and the server is authoritative for the zone."""
        answer = await self._ask(dns.message.make_query(self.zone, dns.rdatatype.SOA))
        if answer.rcode() != dns.rcode.NOERROR:
            raise DnsFailed(f"the server answered {dns.rcode.to_text(answer.rcode())} for the zone")
        if not answer.flags & dns.flags.AA or not answer.get_rrset(answer.answer, self.zone, dns.rdataclass.IN,
                                                                   dns.rdatatype.SOA):
            raise DnsFailed("the server is not authoritative for the zone")

    def holds(self, record: str) -> bool:
        """Is ``record`` inside this provider's zone?"""
        return dns.name.from_text(record).is_subdomain(self.zone)

    async def _update(self, changes: Iterable[tuple[str, str]], *, add: bool) -> None:
        update = dns.update.UpdateMessage(self.zone)
        for name, value in changes:
            (update.add if add else update.delete)(dns.name.from_text(name), *(
                (TTL, dns.rdatatype.TXT, f'"{value}"') if add else (dns.rdatatype.TXT, f'"{value}"')))
        answer = await self._ask(update)
        if answer.rcode() != dns.rcode.NOERROR:
            raise DnsFailed(f"the server refused the update ({dns.rcode.to_text(answer.rcode())})")

    async def add(self, records: list[tuple[str, str]]) -> None:
        await self._update(records, add=True)

    async def remove(self, records: list[tuple[str, str]]) -> None:
        await self._update(records, add=False)

    async def visible(self, records: list[tuple[str, str]], *, seconds: float) -> None:
        """Wait until the server answers every (name, value); ``DnsFailed`` after ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        wanted: dict[str, set[str]] = {}
        for name, value in records:
            wanted.setdefault(name, set()).add(value)
        while True:
            missing = [name for name, values in wanted.items() if not values <= await self._txt(name)]
            if not missing:
                return
            if loop.time() >= deadline:
                raise DnsFailed(f"the TXT records were not visible at the zone's server within {seconds:g} s")
            await asyncio.sleep(0.5)

    async def _txt(self, name: str) -> set[str]:
        answer = await self._ask(dns.message.make_query(name, dns.rdatatype.TXT))
        found: set[str] = set()
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                found.update(b"".join(r.strings).decode("ascii", "replace") for r in rrset)
        return found


async def open_provider(config: Rfc2136Config, policy: OutboundPolicy, timeout: float = TIMEOUT) -> Rfc2136:
    """``Rfc2136.open``, its refusals as ``ValueError`` with a reason a caller may see."""
    try:
        return await Rfc2136.open(config, policy, timeout)
    except OutboundRefused as exc:
        raise ValueError(f"nameserver: {exc.reason}") from None
