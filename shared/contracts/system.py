"""RPC methods every service answers, served by the runtime: ``<service>.ping`` and ``<service>.rewrap``."""

from __future__ import annotations

from shared.context import RequestContext
from shared.contracts import Contract, Empty, Method, ServiceClient
from shared.registry import rpc_name


class PingResult(Contract):
    """Reply of ``<service>.ping``: the service is up and its storage answers."""

    service: str
    status: str = "ok"
    #: outbox rows not yet confirmed by the broker (for /metrics)
    outbox_backlog: int | None = None


class RewrapResult(Contract):
    """Reply of ``<service>.rewrap``: how many data keys moved to the active KEK, and how many would not open."""

    kek_id: str
    rewrapped: int
    unreadable: int = 0


def ping_method(service: str) -> Method[Empty, PingResult]:
    return Method(rpc_name(service), "ping", Empty, PingResult)


def rewrap_method(service: str) -> Method[Empty, RewrapResult]:
    return Method(rpc_name(service), "rewrap", Empty, RewrapResult)


class SystemClient(ServiceClient):
    """The methods every service answers, by service name."""

    async def ping(self, ctx: RequestContext, service: str, *, timeout: float | None = None) -> PingResult:
        return await self._call(ping_method(service), ctx, Empty(), timeout=timeout)

    async def rewrap(self, ctx: RequestContext, service: str, *, timeout: float | None = None) -> RewrapResult:
        return await self._call(rewrap_method(service), ctx, Empty(), timeout=timeout)
