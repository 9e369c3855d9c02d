"""What a caller may say about an upstream it could not use (issue #27, api.md §5.5).

Within the operator's allow-list a tenant can aim a webhook, a federation
backend, an ACME CA or a DNS server at any address and port of the
operator's private networks. Were the error to tell a refused connection
from one closed at once (EOF) or one that never answers, or name the HTTP
status that came back, every failure would be a port scan of those
networks. So:

- every failure to get a usable answer reads ``could not connect``
  (``COULD_NOT_CONNECT``), whatever happened; the cause goes to the server
  log only (``cause``: exception type names and errno, never a message,
  which may carry a URL, a server's words or a credential);
- what an upstream answered (its HTTP status, its words, a body) may be
  shown only when the tenant configured that upstream itself *and* every
  address it was reached at is public (``is_public``: it would pass with
  no allow-list at all). ``Reach`` remembers the addresses an upstream
  resolved to and was connected at, so an answer that changed between the
  check and the connection (DNS rebinding) counts as private.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from shared.outbound import Lookup, is_public, system_lookup

COULD_NOT_CONNECT = "could not connect"


def _literal(host: str | None) -> str | None:
    if not host:
        return None
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%")[0]))
    except ValueError:
        return None


class Reach:
    """The addresses one upstream was resolved to or connected at: public while every one of them was.

    Unknown (nothing seen yet) is not public. Once a private address is seen the upstream stays private
    (a connection to it may be kept in a pool and used again without resolving)."""

    def __init__(self, host: str | None = None) -> None:
        self.seen = False
        self.private = False
        literal = _literal(host)
        if literal is not None:
            self.note(literal)

    def note(self, address: str) -> None:
        self.seen = True
        if not is_public(address):
            self.private = True

    @property
    def public(self) -> bool:
        return self.seen and not self.private

    def lookup(self, inner: Lookup = system_lookup) -> Lookup:
        """``inner``, noting every address it answers."""
        async def noted(host: str, port: int) -> list[str]:
            addresses = await inner(host, port)
            for address in addresses:
                self.note(address)
            return addresses
        return noted


_current: ContextVar[Reach | None] = ContextVar("coffer_reach", default=None)


@contextmanager
def watching(host: str | None = None) -> Iterator[Reach]:
    """A ``Reach`` for one call: the lookups of ``recording`` and the connections of ``note_peers`` made in
    this task (and tasks it starts) while it is open are noted in it."""
    reach = Reach(host)
    token = _current.set(reach)
    try:
        yield reach
    finally:
        _current.reset(token)


def recording(inner: Lookup = system_lookup) -> Lookup:
    """``inner``, noting its answers in the ``Reach`` being watched (if any)."""
    async def noted(host: str, port: int) -> list[str]:
        addresses = await inner(host, port)
        reach = _current.get()
        if reach is not None:
            for address in addresses:
                reach.note(address)
        return addresses
    return noted


def note_peers(connector: Any, into: Reach | None = None) -> Any:
    """``connector`` (aiohttp), noting the peer address of every connection it hands out — new or taken from
    its pool — in ``into``, or else the ``Reach`` being watched: what was connected to, not only what a name
    resolved to (aiohttp resolves no IP literal)."""
    inner = connector.connect

    async def connect(*args: Any, **kwargs: Any) -> Any:
        connection = await inner(*args, **kwargs)
        reach = into if into is not None else _current.get()
        if reach is not None:
            transport = connection.transport
            peer = transport.get_extra_info("peername") if transport is not None else None
            if peer:
                reach.note(str(peer[0]))
            else:
                reach.private = True  # connected, to we don't know what: not shown
        return connection

    connector.connect = connect
    return connector


async def read_at_most(stream: Any, limit: int) -> bytes:
    """At most ``limit`` bytes of a body (an aiohttp ``StreamReader``), and not one more off the socket."""
    chunks: list[bytes] = []
    while limit > 0:
        chunk = await stream.read(limit)
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def cause(exc: BaseException) -> str:
    """For the server log: the exception's type and those of its causes, with errno where there is one (never
    a message: it may hold a URL, a server's words or a credential)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 5:
        seen.add(id(current))
        errno = getattr(current, "errno", None)
        parts.append(type(current).__name__ + (f"[errno {errno}]" if isinstance(errno, int) else ""))
        inner = getattr(current, "os_error", None)  # aiohttp's ClientConnectorError keeps it here
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    return " <- ".join(parts)
