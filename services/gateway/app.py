"""Composition root of the gateway: the HTTP app and its service spec.

The gateway owns the ``gateway`` schema (tenants, identities, policies,
signing keys) and answers ``iam.*`` RPC; it is the only HTTP entry point.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from services.gateway import handlers
from services.gateway.http import (
    MAX_BODY,
    ROUTES,
    SIGNER,
    auth_middleware,
    edge_middleware,
    hide_server_version,
)
from services.gateway.repository import GatewayRepository
from services.gateway.signing import TokenSigner
from shared.runtime import ServiceDeps, ServiceSpec

SPEC = ServiceSpec(name="gateway", rpc_name="iam", migrations=Path(__file__).parent / "migrations")


async def create_app(deps: ServiceDeps) -> web.Application:
    """The gateway's aiohttp application, its signing key loaded (or created)."""
    settings = deps.settings
    repo = GatewayRepository(deps.pool)
    signer = TokenSigner(repo, deps.kms, settings.token_ttl)
    await signer.ensure_key()

    app = web.Application(
        middlewares=[edge_middleware, auth_middleware], client_max_size=settings.max_body_bytes
    )
    app[handlers.REPO] = repo
    app[handlers.BUS] = deps.bus
    app[handlers.HEALTH_TIMEOUT] = settings.health_timeout
    app.on_response_prepare.append(hide_server_version)
    app[SIGNER] = signer
    app[MAX_BODY] = settings.max_body_bytes
    app[ROUTES] = {}
    for route in handlers.ROUTE_TABLE:
        app.router.add_route(route.method, route.path, route.handler)
        app[ROUTES][route.handler] = route
    return app
