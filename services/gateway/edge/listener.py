"""Which door a request came in by: the main API, or the Vault-compatible listener (api.md §13).

Both doors lead to the same middlewares, authorizer, limits, audit log and service clients; a door only
says where a request carries its token and the tenant it names, and what its audit entries are called.
Each aiohttp application of the gateway holds its ``Listener`` under ``LISTENER``; the middlewares and the
tenant rules ask ``bearer_of`` and ``named_tenant`` instead of reading headers themselves, so one rule
serves both doors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from services.gateway.iam.domain import Principal


def authorization_bearer(request: web.Request) -> str | None:
    """``Authorization: Bearer <token>``: the token, or ``None``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


async def tenant_id_header(request: web.Request, who: Principal | None = None) -> str | None:
    """``X-Tenant-ID``, as the caller sent it."""
    return request.headers.get("X-Tenant-ID")


@dataclass(frozen=True)
class Listener:
    """One door of the gateway."""

    #: what its audit entries say (``api`` / ``vault``)
    name: str
    #: the token a request carries, or ``None``
    token: Callable[[web.Request], str | None] = authorization_bearer
    #: the tenant a request names (an id, or something no tenant is called: then the tenant rules answer as
    #: for an unknown tenant), or ``None`` for the caller's own; ``who``: the caller, once authenticated
    tenant: Callable[[web.Request, Principal | None], Awaitable[str | None]] = tenant_id_header


API = Listener("api")
LISTENER = web.AppKey("coffer_listener", Listener)


def listener_of(request: web.Request) -> Listener:
    return request.app.get(LISTENER, API)


def bearer_of(request: web.Request) -> str | None:
    """The token the request carries, where its door looks for one."""
    return listener_of(request).token(request)


async def named_tenant(request: web.Request, who: Principal | None = None) -> str | None:
    """The tenant the request names, as its door names tenants (``None``: the caller's own)."""
    return await listener_of(request).tenant(request, who)
