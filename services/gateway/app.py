"""Composition root of the gateway: the HTTP app and its service spec.

The gateway owns the ``gateway`` schema (tenants, identities, policies,
signing keys) and answers ``iam.*`` RPC; it is the only HTTP entry point.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from services.gateway.signing import TokenSigner, signing_key_aad
from shared.bus import RpcHandler
from shared.context import RequestContext
from shared.contracts import parse
from shared.contracts.iam import MayRequest, MayResult
from shared.cursors import CursorCodec
from shared.db import sealed_keys
from shared.runtime import ServiceDeps, ServiceSpec


async def build_rpc(deps: ServiceDeps) -> Mapping[str, RpcHandler]:
    """``iam.*``: what other services may ask the gateway."""
    repo = GatewayRepository(deps.pool)
    standing = StandingPolicy(IamRepository(deps.pool, deps.schema))

    async def rewrap(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        moved = await repo.rewrap_keys(deps.kms, deps.schema, signing_key_aad)
        return {"kek_id": deps.kms.active_key_id, "rewrapped": moved}

    async def may(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """May each identity do each thing now? (the webhook dispatcher asks before delivering)"""
        req = parse(MayRequest, payload)
        allowed = [await standing.may(c.identity_id, c.resource, c.capability) for c in req.checks]
        return MayResult(allowed=allowed).model_dump()

    return {"rewrap": rewrap, "may": may}


VERSION = "0.1.0"

SPEC = ServiceSpec(name="gateway", migrations=Path(__file__).parent / "migrations",
                   rpc_callers={"may": ("gateway", "webhooks")},  # the dispatcher asks before delivering
                   build=build_rpc)


async def create_app(deps: ServiceDeps) -> web.Application:
    """The gateway's aiohttp application, its signing key loaded (or created)."""
    settings = deps.settings
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
