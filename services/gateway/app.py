"""Composition root of the gateway: the HTTP app and its service spec.

The gateway owns the ``gateway`` schema (tenants, identities, policies,
signing keys) and answers ``iam.*`` RPC; it is the only HTTP entry point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from services.gateway import handlers, iam_routes, login, openapi, ops_routes, secrets_routes, webhooks_routes
from services.gateway.audit import AuditLog
from services.gateway.authz import Guard, StandingPolicy
from services.gateway.http import (
    AUDIT,
    GUARD,
    LIMITER,
    MAX_BODY,
    MINUTE_QUOTA,
    ROUTES,
    SIGNER,
    auth_middleware,
    edge_middleware,
    hide_server_version,
)
from services.gateway.iam_repository import IamRepository
from services.gateway.limits import MinuteQuota, RateLimiter, parse_limits
from services.gateway.repository import GatewayRepository
from services.gateway.server import GatewayRunner
from services.gateway.settings import GatewaySettings
from services.gateway.signing import TokenSigner, signing_key_aad
from shared.context import RequestContext
from shared.contracts import handles, rpc_table
from shared.contracts.iam import MAY, MayRequest, MayResult
from shared.cursors import CursorCodec
from shared.db import sealed_keys
from shared.runtime import Running, ServiceDeps, ServiceSpec


class IamHandlers:
    """``iam.*``: what other services may ask the gateway."""

    def __init__(self, deps: ServiceDeps) -> None:
        self.deps = deps
        self.repo = GatewayRepository(deps.pool)
        self.standing = StandingPolicy(IamRepository(deps.pool, deps.schema))

    @handles(MAY)
    async def may(self, req: MayRequest, ctx: RequestContext) -> MayResult:
        """May each identity do each thing now? (the webhook dispatcher asks before delivering)"""
        return MayResult(allowed=[await self.standing.may(c.identity_id, c.resource, c.capability)
                                  for c in req.checks])

    async def rewrap(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        moved = await self.repo.rewrap_keys(self.deps.kms, self.deps.schema, signing_key_aad)
        return {"kek_id": self.deps.kms.active_key_id, "rewrapped": moved}


VERSION = "0.1.0"


@asynccontextmanager
async def lifespan(deps: ServiceDeps) -> AsyncIterator[Running]:
    """The HTTP gateway: its app, listening; the ``iam.*`` handlers."""
    settings = deps.settings_of(GatewaySettings)
    app = await create_app(deps)
    limiter = app[LIMITER]
    runner = GatewayRunner(app, access_log=None, handle_signals=False,
                           headers_for=lambda remote: limiter.peek("read", f"ip:{remote}").headers())
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        host, port = runner.addresses[0][:2]
        iam = IamHandlers(deps)
        yield Running(rpc={**rpc_table(iam), "rewrap": iam.rewrap}, url=f"http://{host}:{port}", app=app)
    finally:
        await runner.cleanup()


SPEC = ServiceSpec(name="gateway", migrations=Path(__file__).parent / "migrations", lifespan=lifespan,
                   settings=GatewaySettings,
                   rpc_callers={"may": ("gateway", "webhooks")})  # the dispatcher asks before delivering


async def create_app(deps: ServiceDeps) -> web.Application:
    """The gateway's aiohttp application, its signing key loaded (or created)."""
    settings = deps.settings_of(GatewaySettings)
    repo = GatewayRepository(deps.pool)
    signer = TokenSigner(repo, deps.kms, settings.token_ttl)
    await signer.ensure_key()

    app = web.Application(
        middlewares=[edge_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes
    )
    app[handlers.REPO] = repo
    app[handlers.BUS] = deps.bus
    app[handlers.HEALTH_TIMEOUT] = settings.health_timeout
    app[handlers.KMS] = deps.kms
    iam = IamRepository(deps.pool, deps.schema)
    app[handlers.IAM_REPO] = iam
    guard = Guard(iam, settings.trusted_proxies, maintenance=repo.maintenance,
                  disabled_features=settings.disabled_features)
    await guard.start(deps.bus)
    app[GUARD] = guard
    app[iam_routes.CURSORS] = CursorCodec(await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor"))
    app[AUDIT] = AuditLog(deps.pool, await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "audit"))
    try:
        app[LIMITER] = RateLimiter(parse_limits(settings.rate_limits))
    except ValueError as exc:
        raise SystemExit(f"COFFER_RATE_LIMITS: {exc}") from None
    app[MINUTE_QUOTA] = MinuteQuota()
    app[ops_routes.SCHEMA] = deps.schema

    async def close_guard(_: web.Application) -> None:
        await guard.close()
        await app[AUDIT].close()

    app.on_cleanup.append(close_guard)
    app.on_response_prepare.append(hide_server_version)
    app[SIGNER] = signer
    app[MAX_BODY] = settings.max_body_bytes
    app[ROUTES] = {}
    table = (*handlers.ROUTE_TABLE, *login.ROUTES, *iam_routes.ROUTES, *ops_routes.ROUTES, *secrets_routes.ROUTES,
             *webhooks_routes.ROUTES)
    for route in table:
        app.router.add_route(route.method, route.path, route.handler)
        app[ROUTES][route.handler] = route
    app[handlers.OPENAPI] = openapi.document(table, version=VERSION)
    return app
