"""The gateway's state: every part a request handler may use, in one typed object.

Built once by ``bootstrap.build_state`` (the composition root) and stored
under one application key; handlers reach it with ``state(request)``. No
route module defines app keys of its own or imports another's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shared.bus import Bus
from shared.contracts.acme import AcmeClient
from shared.contracts.exports import ExportsClient
from shared.contracts.federation import FederationClient
from shared.contracts.lease import LeaseClient
from shared.contracts.pki import PkiClient
from shared.contracts.secrets import SecretsClient
from shared.contracts.system import SystemClient
from shared.contracts.webhooks import WebhooksClient
from shared.crypto import LocalKms
from shared.cursors import CursorCodec
from shared.keyring import ServiceKeyring
from shared.outbound import OutboundPolicy

if TYPE_CHECKING:
    from services.gateway.access.repository import AccessRepository
    from services.gateway.audit.log import AuditLog
    from services.gateway.edge.clients import ClientAddresses
    from services.gateway.edge.gates import Gates
    from services.gateway.edge.limits import MinuteQuota, RateLimiter
    from services.gateway.edge.routes import Route
    from services.gateway.events.hub import EventHub
    from services.gateway.iam.authorizer import Authorizer
    from services.gateway.iam.policies_repository import PolicyRepository
    from services.gateway.iam.repository import IamRepository
    from services.gateway.iam.revocations import Revocations
    from services.gateway.iam.tenancy import Tenancy, TenantRepository
    from services.gateway.iam.tokens import TokenSigner
    from services.gateway.settings import GatewaySettings
    from services.gateway.system.repository import SystemRepository


@dataclass
class GatewayState:
    """What the gateway's handlers work with (see ``bootstrap.build_state``)."""

    settings: GatewaySettings
    schema: str
    #: the gateway's keyring (shared/keyring.py): signing keys, audit and cursor keys; TOTP seeds per tenant
    kms: ServiceKeyring
    #: the root keyring, when this process holds it (sys/kms:rotate's retire_legacy)
    root: LocalKms | None
    bus: Bus
    # storage
    identities: IamRepository
    tenants: TenantRepository
    policies: PolicyRepository
    access: AccessRepository
    system: SystemRepository
    # the parts of authorisation, each changed only through its own methods or events
    signer: TokenSigner
    revocations: Revocations
    authorizer: Authorizer
    #: this replica's event streams and the store they read (services/gateway/events)
    events: EventHub
    tenancy: Tenancy
    gates: Gates
    clients: ClientAddresses
    # the edge
    limiter: RateLimiter
    minute_quota: MinuteQuota
    audit: AuditLog
    cursors: CursorCodec
    # the services behind the gateway
    secrets: SecretsClient
    webhooks: WebhooksClient
    pki: PkiClient
    lease: LeaseClient
    exports: ExportsClient
    federation: FederationClient
    acme: AcmeClient
    services: SystemClient
    #: calls to tenant-chosen addresses (auth methods' issuers): the operator's allow-list, never the platform
    outbound: OutboundPolicy = field(default_factory=lambda: OutboundPolicy.from_cidrs((), False))
    #: auth methods' issuer keys, cached per (tenant, method) (services/gateway/methods/routes.py)
    method_keys: OrderedDict[tuple[str, str], tuple[Any, Any]] = field(default_factory=OrderedDict)
    routes: dict[Any, Route] = field(default_factory=dict)
    openapi: dict[str, Any] = field(default_factory=dict)


STATE = web.AppKey("coffer_gateway", GatewayState)


def state(request: web.Request) -> GatewayState:
    """The gateway's state, from a request."""
    return request.app[STATE]
