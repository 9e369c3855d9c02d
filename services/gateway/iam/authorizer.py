"""Policy decisions of this replica: the rules bound to each identity (cached), allowed or not.

Rules live in PostgreSQL; each replica caches them per identity for
``refresh`` seconds and forgets them all at once on a ``policy.*`` event (a
policy or binding changed, here or on another replica). A grant (a binding
with ``expires_at``, api.md §14) is cached with its end and left out of every
decision made at or after it: it ends on every replica at the same moment,
without an event or a cache flush, whatever the cache's age.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from aiohttp import web

from services.gateway.edge.clients import ClientAddresses
from services.gateway.edge.routes import AUDIT_TARGET
from services.gateway.iam.domain import Principal, scope_to_list
from services.gateway.iam.policies_repository import PolicyRepository
from services.gateway.iam.policy import IpAddress, Rule, decide, parse_rules
from services.gateway.iam.repository import IamRepository
from shared.errors import CofferError

log = structlog.get_logger("coffer.gateway.authz")
Item = TypeVar("Item")


@dataclass(frozen=True)
class BoundRules:
    """An identity's rules: those of its standing bindings, and each grant's with the moment it ends."""

    standing: tuple[Rule, ...] = ()
    #: (end as a Unix time, the granted policy's rules)
    grants: tuple[tuple[float, tuple[Rule, ...]], ...] = ()

    def at(self, now: float) -> tuple[Rule, ...]:
        """The rules in force at ``now`` (Unix time): a grant's end is exclusive."""
        if not self.grants:
            return self.standing
        return self.standing + tuple(rule for end, rules in self.grants if now < end for rule in rules)


def bound_rules(raw: list[tuple[Any, datetime | None]], identity_id: str) -> BoundRules:
    """``PolicyRepository.rules_for``'s rows, parsed; a stored policy that no longer parses grants nothing."""
    try:  # policy by policy (each has at most 100 rules; an identity may hold many policies)
        standing = tuple(rule for rules, end in raw if end is None for rule in parse_rules(rules))
        grants = tuple((end.timestamp(), parse_rules(rules)) for rules, end in raw if end is not None)
    except CofferError:
        log.error("stored_policy_invalid", identity_id=identity_id)
        return BoundRules()
    return BoundRules(standing, grants)


class RuleCache:
    """The parsed rules of every policy bound to an identity, cached (grants with their ends)."""

    def __init__(self, policies: PolicyRepository, refresh: float = 30.0) -> None:
        self.policies = policies
        self.refresh = refresh
        self._rules: dict[str, tuple[float, BoundRules]] = {}

    async def rules(self, identity_id: str) -> tuple[Rule, ...]:
        """The rules in force now (a grant whose ``expires_at`` has come is left out, cached or not)."""
        cached = self._rules.get(identity_id)
        if cached and time.monotonic() - cached[0] < self.refresh:
            return cached[1].at(time.time())
        bound = bound_rules(await self.policies.rules_for(identity_id), identity_id)
        if len(self._rules) > 100_000:
            self._rules.clear()
        self._rules[identity_id] = (time.monotonic(), bound)
        return bound.at(time.time())

    def cached(self, identity_id: str) -> tuple[Rule, ...] | None:
        """The identity's rules if this replica has them fresh (no waiting: ``None`` otherwise)."""
        cached = self._rules.get(identity_id)
        return cached[1].at(time.time()) if cached and time.monotonic() - cached[0] < self.refresh else None

    def forget(self, identity_id: str | None = None) -> None:
        """A policy or a binding changed (here or on another replica): cached decisions are stale.

        ``identity_id``: only that identity's (it was deleted or its tokens voided).
        """
        if identity_id is None:
            self._rules.clear()
        else:
            self._rules.pop(identity_id, None)


class Authorizer:
    """May this request's caller do that? (api.md §4)"""

    def __init__(self, rules: RuleCache, clients: ClientAddresses) -> None:
        self.rules = rules
        self.clients = clients

    async def authorize(self, request: web.Request, who: Principal, resource: str, capability: str) -> None:
        """``access_denied`` (or the failed condition) unless a bound policy allows it; the audit entry names it."""
        request[AUDIT_TARGET] = (resource, capability)
        await self._decide(request, who, resource, capability)

    async def _decide(self, request: web.Request, who: Principal, resource: str, capability: str) -> None:
        decide(await self.rules.rules(who.identity_id), resource, capability,
               ip=self.clients.of(request), mfa_at=who.mfa_at)

    async def authorize_also(self, request: web.Request, who: Principal, resource: str, capability: str) -> None:
        """A second resource the request acts through (a role's CA): allowed too, or the reason raised;
        the audit entry keeps naming the request's own target."""
        await self._decide(request, who, resource, capability)

    async def may(self, request: web.Request, who: Principal, resource: str, capability: str) -> bool:
        """Would a policy allow it? (A question about one item: the request's audit target stays.)"""
        try:
            await self._decide(request, who, resource, capability)
        except CofferError:
            return False
        return True

    async def listable(self, request: web.Request, who: Principal, items: Sequence[Item],
                       resource_of: Callable[[Item], str]) -> list[Item]:
        """The items of a list the caller may ``list`` (every list answers only with those)."""
        return await self.listable_as(request, who, items, resource_of, "list")

    async def listable_as(self, request: web.Request, who: Principal, items: Sequence[Item],
                          resource_of: Callable[[Item], str], capability: str) -> list[Item]:
        """The items the caller may ``capability`` (the rules, the client address and the time are the same
        for every item of the page: looked up once, each item decided with them)."""
        rules = await self.rules.rules(who.identity_id)
        ip, now = self.clients.of(request), datetime.now(UTC)
        return [item for item in items if _allows(rules, resource_of(item), capability, ip, now, who.mfa_at)]


def may_see(scopes: frozenset[str], rules: tuple[Rule, ...], resource: str, capability: str = "list", *,
             ip: IpAddress | None = None, mfa_at: datetime | None = None, now: datetime | None = None) -> bool:
    """May a holder of ``scopes`` and ``rules`` learn of an event about ``resource``? The one rule of every
    event delivery, decided when the event goes out: the scope that listing ``resource`` needs, and a policy
    allowing ``capability`` (``list``) now. Webhook subscriptions ask it for their owner (``iam.may``: the
    identity's allowed scopes, no client address, no MFA); event streams for the stream's token (its scopes,
    the client's address, its ``mfa_at``)."""
    if scope_to_list(resource) not in scopes:
        return False
    return _allows(rules, resource, capability, ip, now or datetime.now(UTC), mfa_at)


def _allows(rules: tuple[Rule, ...], resource: str, capability: str, ip: IpAddress | None, now: datetime,
            mfa_at: datetime | None) -> bool:
    try:
        decide(rules, resource, capability, ip=ip, now=now, mfa_at=mfa_at)
    except CofferError:
        return False
    return True


class StandingPolicy:
    """Policy questions about an identity that is not making a request (``iam.may``).

    Used when a service acts for an identity later (the webhook dispatcher
    delivering an event to a subscription its owner made): the identity must
    hold the scope and a policy must allow it *now*. There is no client address
    and no MFA step-up, so rules with those conditions don't allow it. Answers
    are cached for ``ttl`` seconds (a policy change is seen within that).
    """

    def __init__(self, identities: IamRepository, policies: PolicyRepository, ttl: float = 1.0) -> None:
        self.identities = identities
        self.policies = policies
        self.ttl = ttl
        self._cache: dict[str, tuple[float, frozenset[str], BoundRules]] = {}

    async def may(self, identity_id: str, resource: str, capability: str) -> bool:
        scopes, bound = await self._load(identity_id)
        return may_see(scopes, bound.at(time.time()), resource, capability)

    async def _load(self, identity_id: str) -> tuple[frozenset[str], BoundRules]:
        cached = self._cache.get(identity_id)
        if cached and time.monotonic() - cached[0] < self.ttl:
            return cached[1], cached[2]
        row = await self.identities.identity_any_tenant(identity_id)
        scopes = frozenset(row["allowed_scopes"]) if row is not None else frozenset()
        bound = bound_rules(await self.policies.rules_for(identity_id), identity_id) if row is not None \
            else BoundRules()
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[identity_id] = (time.monotonic(), scopes, bound)
        return scopes, bound
