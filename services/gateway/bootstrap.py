"""The gateway's composition root: every part built once, from the service's deps, into ``GatewayState``.

cosmicpython's ``bootstrap.py``: the one place that knows which concrete
repository, cache and client each part gets. ``build_app`` then makes the
aiohttp application: the middlewares, and one route table gathered from the
rooms (system, iam, audit, and the forwarding routes of each service).
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.access import routes as access_routes
from services.gateway.access.repository import AccessRepository
from services.gateway.audit import routes as audit_routes
from services.gateway.audit.log import AuditLog
from services.gateway.edge import openapi
from services.gateway.edge.clients import ClientAddresses
from services.gateway.edge.gates import Gates
from services.gateway.edge.limits import MinuteQuota, RateLimiter, parse_limits
from services.gateway.edge.listener import API, LISTENER
from services.gateway.edge.middlewares import auth_middleware, edge_middleware, hide_server_version
from services.gateway.edge.routes import Route
from services.gateway.events import routes as events_routes
from services.gateway.events.hub import EventHub
from services.gateway.events.store import EventStore
from services.gateway.forward import acme as forward_acme
from services.gateway.forward import exports as forward_exports
from services.gateway.forward import federation as forward_federation
from services.gateway.forward import lease as forward_lease
from services.gateway.forward import pki as forward_pki
from services.gateway.forward import pki_public as forward_pki_public
from services.gateway.forward import secret_policies as forward_secret_policies
from services.gateway.forward import secrets as forward_secrets
from services.gateway.forward import webhooks as forward_webhooks
from services.gateway.iam import login
from services.gateway.iam.authorizer import Authorizer, RuleCache
from services.gateway.iam.policies_repository import PolicyRepository
from services.gateway.iam.repository import IamRepository
from services.gateway.iam.revocations import Revocations
from services.gateway.iam.routes import identities, policies, tenants, tokens
from services.gateway.iam.tenancy import Tenancy
from services.gateway.iam.tenants_repository import TenantRepository
from services.gateway.iam.tokens import SigningKeyStore, TokenSigner
from services.gateway.methods import routes as auth_methods
from services.gateway.methods import sso as auth_sso
from services.gateway.settings import GatewaySettings
from services.gateway.state import STATE, GatewayState
from services.gateway.system import routes as system_routes
from services.gateway.system.repository import SystemRepository
from shared.contracts.acme import AcmeClient
from shared.contracts.exports import ExportsClient
from shared.contracts.federation import FederationClient
from shared.contracts.lease import LeaseClient
from shared.contracts.pki import PkiClient
from shared.contracts.secrets import SecretsClient
from shared.contracts.system import SystemClient
from shared.contracts.webhooks import WebhooksClient
from shared.cursors import CursorCodec
from shared.db import sealed_keys
from shared.durations import parse_duration
from shared.runtime import ServiceDeps

VERSION = "0.1.0"

ROUTES: tuple[Route, ...] = (
    *system_routes.ROUTES, *login.ROUTES, *tokens.ROUTES, *identities.ROUTES, *tenants.ROUTES,
    *policies.ROUTES, *access_routes.ROUTES, *audit_routes.ROUTES, *forward_secrets.ROUTES, *forward_webhooks.ROUTES,
    *forward_pki_public.ROUTES, *forward_pki.ROUTES, *forward_lease.ROUTES, *forward_secret_policies.ROUTES,
    *forward_exports.ROUTES, *forward_federation.ROUTES, *forward_acme.ROUTES, *auth_methods.ROUTES, *auth_sso.ROUTES,
    *events_routes.ROUTES,
)


async def build_state(deps: ServiceDeps) -> GatewayState:
    """Every part of the gateway, built once (the signing key loaded, or created by the first replica)."""
    settings = deps.settings_of(GatewaySettings)
    pool, schema = deps.pool, deps.schema
    try:
        limiter = RateLimiter(parse_limits(settings.rate_limits))
    except ValueError as exc:
        raise SystemExit(f"COFFER_RATE_LIMITS: {exc}") from None
    identities_repo = IamRepository(pool, schema)
    policies_repo = PolicyRepository(pool, schema)
    system = SystemRepository(pool, schema)
    signer = TokenSigner(SigningKeyStore(pool), deps.kms, settings.token_ttl)
    await signer.ensure_key()
    clients = ClientAddresses(settings.trusted_proxies)
    tenants_repo = TenantRepository(pool, schema)
    rules, revocations = RuleCache(policies_repo), Revocations(identities_repo)
    events = EventHub(EventStore(pool, schema, parse_duration(settings.event_retention, field="event_retention")),
                      rules, revocations, streams_per_identity=settings.event_streams,
                      heartbeat=settings.event_heartbeat, buffer=settings.event_stream_buffer)
    return GatewayState(
        settings=settings, schema=schema, kms=deps.kms, root=deps.root, bus=deps.bus,
        identities=identities_repo, tenants=tenants_repo, policies=policies_repo,
        access=AccessRepository(pool, schema), system=system,
        signer=signer, revocations=revocations, events=events,
        authorizer=Authorizer(rules, clients), tenancy=Tenancy(tenants_repo, identities_repo),
        gates=Gates(settings.disabled_features, system.maintenance), clients=clients,
        limiter=limiter, minute_quota=MinuteQuota(),
        audit=AuditLog(pool, await sealed_keys.ensure_key(pool, deps.kms, schema, "audit")),
        cursors=CursorCodec(await sealed_keys.ensure_key(pool, deps.kms, schema, "cursor")),
        secrets=SecretsClient(deps.bus), webhooks=WebhooksClient(deps.bus), pki=PkiClient(deps.bus),
        lease=LeaseClient(deps.bus), exports=ExportsClient(deps.bus),
        federation=FederationClient(deps.bus), acme=AcmeClient(deps.bus),
        services=SystemClient(deps.bus), outbound=deps.outbound(),
    )


def build_app(state: GatewayState) -> web.Application:
    """The aiohttp application of ``state``: middlewares, the route table, the OpenAPI description."""
    app = web.Application(middlewares=[edge_middleware, auth_middleware],
                          client_max_size=state.settings.max_body_bytes)
    app[STATE] = state
    app[LISTENER] = API
    app.on_response_prepare.append(hide_server_version)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
        state.routes[route.handler] = route
    state.openapi = openapi.document(ROUTES, version=VERSION, https_only=not state.settings.outbound_allow_http)
    return app
