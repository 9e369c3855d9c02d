"""The Vault-compatible listener (api.md §13): a second aiohttp application of the gateway, on its own address.

``COFFER_VAULT_LISTEN=127.0.0.1:8200`` (unset: no such listener) opens it. It shares everything with the
main API — the gateway's state, the edge and auth middlewares (so authentication, maintenance, tenant,
scope, policy, rate limit, quota and audit are the same code), the authorizer and the typed service
clients — and differs only in its door (``edge/listener``): the token is ``X-Vault-Token`` (or
``Authorization: Bearer``), the tenant is ``X-Vault-Namespace`` (a tenant id, or a tenant's name; the same
partner rules as ``X-Tenant-ID``), its audit entries say ``listener: vault``, its routes speak Vault's paths
and shapes (``system``, ``tokens``, ``kv``), every failure gains Vault's ``errors`` list, and a request for
response wrapping is refused (``no_response_wrapping``). Its server takes any method token, for Vault's
``LIST``.
"""

from __future__ import annotations

import re

from aiohttp import web

from services.gateway.edge.listener import LISTENER, Listener, authorization_bearer
from services.gateway.edge.middlewares import auth_middleware, edge_middleware, hide_server_version
from services.gateway.edge.routes import Handler, Route
from services.gateway.iam.domain import Principal
from services.gateway.iam.models import NAME
from services.gateway.methods.routes import TENANT_ID
from services.gateway.state import STATE, GatewayState, state
from services.gateway.vault import kv, pki, system, tokens
from services.gateway.vault.answers import vault_errors
from shared.errors import InvalidRequest


def vault_token(request: web.Request) -> str | None:
    """``X-Vault-Token``, else ``Authorization: Bearer``."""
    return request.headers.get("X-Vault-Token", "").strip() or authorization_bearer(request)


async def namespace_tenant(request: web.Request, who: Principal | None = None) -> str | None:
    """The tenant ``X-Vault-Namespace`` names: a tenant id as it is; a tenant's name as that tenant's id when it
    is the caller's tenant or below it (a login, with no caller yet: any tenant's).

    Anything else — a name no tenant has, a name of a tenant outside the caller's reach, a nested ``a/b`` path
    (Coffer's tenants have none) — comes back as it was sent: no tenant has that id, so the tenant rules answer
    as for an unknown tenant (``tenant_not_found`` to a partner admin, ``tenant_access_denied`` to anyone
    else), and a name tells no one whether another tenant is called so — nor does the time it takes: the name
    is looked up within the caller's subtree only (``id_in_reach``)."""
    raw = request.headers.get("X-Vault-Namespace")
    name = raw.strip().strip("/") if raw is not None else ""
    if not name or re.fullmatch(TENANT_ID.strip("^$"), name):
        return name or None
    if not re.fullmatch(NAME.strip("^$"), name):
        return name[:64]
    tenants = state(request).tenants
    found = await tenants.id_by_name(name) if who is None else await tenants.id_in_reach(name, who.tenant_id)
    return found or name


VAULT = Listener("vault", token=vault_token, tenant=namespace_tenant)
WRAP_TTL = "X-Vault-Wrap-TTL"


@web.middleware
async def no_response_wrapping(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Vault's response wrapping is not served, so a request asking for it (``X-Vault-Wrap-TTL``) is 400
    ``invalid_request`` before anything is read — never answered unwrapped: whoever relays the answer of a
    wrapped read expects a single-use token, not the secret."""
    if WRAP_TTL in request.headers:
        raise InvalidRequest(f"response wrapping ({WRAP_TTL}) is not served here: ask without it",
                             details={"header": WRAP_TTL})
    return await handler(request)


def routes(mount: str) -> tuple[Route, ...]:
    return (*system.ROUTES, *tokens.ROUTES, *kv.routes(mount), *pki.ROUTES)


def build_vault_app(st: GatewayState) -> web.Application:
    """The listener's application: Vault's routes behind the gateway's own middlewares and state."""
    app = web.Application(middlewares=[vault_errors, edge_middleware, no_response_wrapping, auth_middleware],
                          client_max_size=st.settings.max_body_bytes)
    app[STATE] = st
    app[LISTENER] = VAULT
    app.on_response_prepare.append(hide_server_version)
    for route in routes(st.settings.vault_kv_mount):
        app.router.add_route(route.method, route.path, route.handler)
        st.routes[route.handler] = route
    return app
