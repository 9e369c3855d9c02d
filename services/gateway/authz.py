"""Authorisation state of one gateway replica: revocations, policy rules, tenants, client IP.

Revocations and policy rules live in PostgreSQL; each replica keeps them in
memory, loads them at start, applies ``token.revoked`` / ``policy.*`` events
as they come (a broadcast queue per replica, so a change reaches every
replica within a second), and reloads everything every ``refresh`` seconds in
case it missed an event while disconnected.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog
from aiohttp import web

from services.gateway.domain import Principal, scope_to_list
from services.gateway.iam_repository import IamRepository
from services.gateway.policy import IpAddress, IpNetwork, Rule, client_address, decide, parse_rules
from shared.bus import Bus
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.errors import (
    CofferError,
    FeatureDisabled,
    MaintenanceMode,
    TenantAccessDenied,
    TenantNotFound,
    TokenRevoked,
)

log = structlog.get_logger("coffer.gateway.authz")

#: (resource, capability) the request was authorised for: what the audit entry names.
AUDIT_TARGET = web.RequestKey("audit_target", tuple)
CLIENT_IP: web.RequestKey[IpAddress | None] = web.RequestKey("client_ip", object)


FEATURE_PREFIXES = (("/v1/pki/acme", "acme"), ("/v1/pki", "pki"), ("/v1/webhooks", "webhooks"),
                    ("/v1/subscriptions", "webhooks"), ("/v1/engines", "dynamic"), ("/v1/leases", "dynamic"),
                    ("/v1/exports", "exports"), ("/v1/federation", "federation"))
QUOTA_TTL = 5.0
Item = TypeVar("Item")


def feature_of(path: str) -> str | None:
    """The feature area a path belongs to (for ``COFFER_DISABLED_FEATURES``)."""
    return next((feature for prefix, feature in FEATURE_PREFIXES
                 if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + ":")), None)


class StandingPolicy:
    """Policy questions about an identity that is not making a request (``iam.may``).

    Used when a service acts for an identity later (the webhook dispatcher
    delivering an event to a subscription its owner made): the identity must
    hold the scope and a policy must allow it *now*. There is no client address
    and no MFA step-up, so rules with those conditions don't allow it. Answers
    are cached for ``ttl`` seconds (a policy change is seen within that).
    """

    def __init__(self, repo: IamRepository, ttl: float = 1.0) -> None:
        self.repo = repo
        self.ttl = ttl
        self._cache: dict[str, tuple[float, frozenset[str], tuple[Rule, ...]]] = {}

    async def may(self, identity_id: str, resource: str, capability: str) -> bool:
        scopes, rules = await self._load(identity_id)
        if scope_to_list(resource) not in scopes:
            return False
        try:
            decide(rules, resource, capability, ip=None, mfa_at=None)
        except CofferError:
            return False
        return True

    async def _load(self, identity_id: str) -> tuple[frozenset[str], tuple[Rule, ...]]:
        cached = self._cache.get(identity_id)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1], cached[2]
        row = await self.repo.identity_any_tenant(identity_id)
        scopes = frozenset(row["allowed_scopes"]) if row is not None else frozenset()
        try:
            rules = parse_rules(raw) if row is not None and (raw := await self.repo.rules_for(identity_id)) else ()
        except CofferError:
            rules = ()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[identity_id] = (time.monotonic(), scopes, rules)
        return scopes, rules


class Guard:
    """Per-replica gate state: revocations, policy rules, maintenance, tenant quotas."""

    def __init__(self, repo: IamRepository, trusted_proxies: tuple[str, ...], *, refresh: float = 30.0,
                 maintenance: Callable[[], Awaitable[dict[str, Any]]] | None = None,
                 disabled_features: frozenset[str] = frozenset()) -> None:
        self.repo = repo
        self._load_maintenance = maintenance
        self.maintenance: dict[str, Any] = {"enabled": False, "message": None}
        self.disabled_features = disabled_features
        self._quotas: dict[str, tuple[float, dict[str, Any]]] = {}
        self.trusted: tuple[IpNetwork, ...] = tuple(ipaddress.ip_network(c, strict=False) for c in trusted_proxies)
        self.refresh = refresh
        #: (tenant, jti) of revoked tokens: a revocation applies to tokens of its own tenant only
        self.revoked_tokens: set[tuple[str, str]] = set()
        self.revoked_identities: set[str] = set()
        #: identity -> the lowest token generation still valid (absent: every generation is)
        self.token_floors: dict[str, int] = {}
        self._rules: dict[str, tuple[float, tuple[Rule, ...]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._root: str | None = None  # the root tenant never changes once sys/init made it

    async def start(self, bus: Bus) -> None:
        await self.reload()
        await bus.subscribe("gateway-authz", ["policy.*", "token.revoked", "system.maintenance"], self.on_event,
                            broadcast=True)
        self._task = asyncio.create_task(self._refresher(), name="gateway-authz-refresh")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def reload(self) -> None:
        self.revoked_tokens, self.revoked_identities, floors = await self.repo.revocations()
        await self.repo.forget_old_login_failures()
        for identity_id, generation in floors.items():  # an event newer than the read keeps its floor
            self.raise_floor(identity_id, generation)
        self._rules.clear()
        if self._load_maintenance is not None:
            self.maintenance = await self._load_maintenance()

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - keep what we have, try again later
                log.warning("authz_reload_failed", error=type(exc).__name__)

    async def on_event(self, event: Event, ctx: RequestContext) -> None:
        if event.type == "system.maintenance":
            self.maintenance = {"enabled": bool(event.data.get("enabled")), "message": event.data.get("message")}
        elif event.type == "token.revoked":
            if (jti := event.data.get("jti")) and (tenant := event.data.get("tenant_id") or event.tenant_id):
                self.revoked_tokens.add((str(tenant), str(jti)))
            identity = event.data.get("identity_id")
            generation = event.data.get("generation")
            if identity and isinstance(generation, int):
                self.raise_floor(str(identity), generation)  # its older tokens are void
            elif identity:
                self.revoked_identities.add(str(identity))  # deleted: every token is void
                self._rules.pop(str(identity), None)
        else:  # policy.created / updated / deleted, bindings included
            self.forget_rules()

    def forget_rules(self) -> None:
        self._rules.clear()

    def raise_floor(self, identity_id: str, generation: int) -> None:
        """Tokens of ``identity_id`` older than ``generation`` are void from now on."""
        if generation > self.token_floors.get(identity_id, 0):
            self.token_floors[identity_id] = generation

    # -- checks, in the order of api.md §1 ---------------------------------------

    def check_open(self, path: str) -> None:
        """503 ``maintenance_mode`` (but for ``/v1/sys/*``) or ``feature_disabled`` for the path's area."""
        if self.maintenance.get("enabled") and path.startswith("/v1/") and not path.startswith("/v1/sys/"):
            message = self.maintenance.get("message") or "Coffer is in maintenance"
            raise MaintenanceMode(str(message), details={"message": message})
        feature = feature_of(path)
        if feature in self.disabled_features:
            raise FeatureDisabled(f"the '{feature}' feature is disabled here", details={"feature": feature})

    async def quotas(self, tenant_id: str) -> dict[str, Any]:
        """The tenant's quotas (cached a few seconds; a PATCH here drops the cache at once)."""
        cached = self._quotas.get(tenant_id)
        if cached and time.monotonic() - cached[0] < QUOTA_TTL:
            return cached[1]
        row = await self.repo.tenant(tenant_id)
        quotas = dict(row["quotas"]) if row is not None else {}
        self._quotas[tenant_id] = (time.monotonic(), quotas)
        return quotas

    async def root_tenant_id(self) -> str | None:
        """The root tenant (the one sys/init created, with no parent); ``None`` before sys/init."""
        if self._root is None:
            self._root = await self.repo.root_tenant_id()
        return self._root

    async def is_root(self, tenant_id: str) -> bool:
        return tenant_id == await self.root_tenant_id()

    def forget_quotas(self, tenant_id: str) -> None:
        self._quotas.pop(tenant_id, None)

    def check_revoked(self, who: Principal) -> None:
        if ((who.tenant_id, who.token_id) in self.revoked_tokens or who.identity_id in self.revoked_identities
                or who.generation < self.token_floors.get(who.identity_id, 0)):
            raise TokenRevoked("token has been revoked")

    async def resolve_tenant(self, request: web.Request, who: Principal) -> str:
        """The tenant the request acts in: the caller's, or a descendant named by a partner admin."""
        target = request.headers.get("X-Tenant-ID")
        if not target or target == who.tenant_id:
            return who.tenant_id
        denied = TenantAccessDenied("you may not act in that tenant")
        me = await self.repo.identity_any_tenant(who.identity_id)
        home = await self.repo.tenant(who.tenant_id)
        if me is None or not me["partner_admin"] or home is None or home["kind"] != "partner":
            raise denied  # the same answer whether the tenant exists or not
        if len(target) > 64 or await self.repo.tenant(target) is None:
            raise TenantNotFound(details={"tenant_id": target[:64]})
        if not await self.repo.in_subtree(who.tenant_id, target):
            raise denied
        return target

    async def rules(self, identity_id: str) -> tuple[Rule, ...]:
        cached = self._rules.get(identity_id)
        if cached and time.monotonic() - cached[0] < self.refresh:
            return cached[1]
        raw = await self.repo.rules_for(identity_id)
        try:
            rules = parse_rules(raw) if raw else ()
        except CofferError:  # a stored policy that no longer parses grants nothing
            log.error("stored_policy_invalid", identity_id=identity_id)
            rules = ()
        self._rules[identity_id] = (time.monotonic(), rules)
        return rules

    def client_ip(self, request: web.Request) -> IpAddress | None:
        """The socket peer; ``X-Forwarded-For`` only when that peer is a trusted proxy (once per request)."""
        if CLIENT_IP in request:
            return request[CLIENT_IP]
        request[CLIENT_IP] = ip = self._client_ip(request)
        return ip

    def _client_ip(self, request: web.Request) -> IpAddress | None:
        peer = client_address(request.remote)
        xff = request.headers.get("X-Forwarded-For")
        if peer is None or not xff or not self._trusted(peer):
            return peer
        hops = [client_address(h.strip()) for h in xff.split(",")][-20:]
        for hop in reversed(hops):  # the nearest address that is not one of our proxies
            if hop is None:
                return peer
            if not self._trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _trusted(self, ip: IpAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.trusted)

    async def authorize(self, request: web.Request, who: Principal, resource: str, capability: str) -> None:
        """``access_denied`` (or the failed condition) unless a bound policy allows it; the audit entry names it."""
        request[AUDIT_TARGET] = (resource, capability)
        await self._decide(request, who, resource, capability)

    async def _decide(self, request: web.Request, who: Principal, resource: str, capability: str) -> None:
        decide(await self.rules(who.identity_id), resource, capability,
               ip=self.client_ip(request), mfa_at=who.mfa_at)

    async def listable(self, request: web.Request, who: Principal, items: Sequence[Item],
                       resource_of: Callable[[Item], str]) -> list[Item]:
        """The items of a list the caller may ``list`` (every list answers only with those)."""
        return [item for item in items if await self.may(request, who, resource_of(item), "list")]

    async def may(self, request: web.Request, who: Principal, resource: str, capability: str) -> bool:
        """Would a policy allow it? (A question about one item: the request's audit target stays.)"""
        try:
            await self._decide(request, who, resource, capability)
        except CofferError:
            return False
        return True

