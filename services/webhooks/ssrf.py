"""The SSRF guard: which URLs a webhook may have, and a resolver that pins connections.

At creation and before every delivery the URL is checked: ``https`` only
(``http`` if the operator allows it), no credentials in it, and *every*
address its host resolves to must be permitted (``AddressPolicy``). At
connect time aiohttp asks ``GuardedResolver``, which resolves and checks
again and hands the connector only the checked addresses, so a DNS answer
that changes between check and connect (rebinding) can't slip through.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from services.webhooks.domain import AddressPolicy
from shared.errors import WebhookUrlInvalid

Lookup = Callable[[str, int], Awaitable[list[str]]]
MAX_URL = 2048


async def system_lookup(host: str, port: int) -> list[str]:
    """Every A and AAAA answer for ``host`` (numeric forms like ``2130706433`` included, as the OS reads them)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _invalid(why: str, url: str) -> WebhookUrlInvalid:
    # a URL with credentials in it is not echoed back (nor anywhere else)
    shown = "[redacted: has credentials]" if "@" in url else url[:200]
    return WebhookUrlInvalid(f"webhook URL refused: {why}", details={"url": shown, "reason": why})


def parse_url(raw: str, policy: AddressPolicy) -> URL:
    """The URL if its form is acceptable (scheme, no userinfo, a host); addresses are checked by ``check``."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_URL or any(c.isspace() for c in raw):
        raise _invalid("not a URL", str(raw))
    try:
        url = URL(raw)
    except (ValueError, TypeError):
        raise _invalid("not a URL", raw) from None
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if url.scheme not in schemes:
        raise _invalid("scheme must be https", raw)
    if url.user is not None or url.password is not None or "@" in (url.raw_authority or ""):
        raise _invalid("credentials in the URL are not allowed", raw)
    if not url.host:
        raise _invalid("no host", raw)
    if url.fragment:
        raise _invalid("fragments are not sent to servers", raw)
    return url


async def check(raw: str, policy: AddressPolicy, lookup: Lookup = system_lookup) -> list[str]:
    """The addresses ``raw`` may be delivered to; ``webhook_url_invalid`` if any is not permitted."""
    url = parse_url(raw, policy)
    try:
        addresses = await lookup(url.raw_host or "", url.port or 443)
    except (OSError, UnicodeError):
        raise _invalid("host does not resolve", raw) from None
    if not addresses:
        raise _invalid("host does not resolve", raw)
    refused = [a for a in addresses if not policy.permits(a)]
    if refused:
        raise _invalid("host resolves to a private, loopback, link-local or reserved address", raw)
    return addresses


class GuardedResolver(AbstractResolver):
    """aiohttp resolver: only checked addresses ever reach the connector."""

    def __init__(self, policy: AddressPolicy, lookup: Lookup = system_lookup) -> None:
        self.policy = policy
        self.lookup = lookup

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
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

