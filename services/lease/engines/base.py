"""What every dynamic-credential engine is: a target system where users are made and removed.

An engine type knows its config (``parse_config``: the public part stored in
clear, the secret part sealed), its roles (``role_spec``), and how to make a
user, remove it with its sessions, and rotate its own admin password. Engines
raise only the three ``Target*`` exceptions below, with messages of their own:
nothing a target says (an error text can quote a statement, and a statement
can hold a password) travels further than a log line's error class.

Whatever stands at an engine's address that isn't its target answering
(nothing listening, a silent port, another protocol, an HTTP status of some
other server) is ``TargetDown``, one answer for all: the caller can't tell
an open port from a closed or a silent one (the cause goes to the log).

``Limits`` are the operator's: what a tenant's role may grant in its target
(RabbitMQ tags, Redis categories and commands). Tenants configure engines,
so an engine never mints an administrator the operator did not allow.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from shared.errors import InvalidConfig, InvalidRole
from shared.outbound import Lookup, OutboundPolicy, OutboundRefused, check_host, system_lookup


class TargetDown(Exception):
    """The target could not be reached or did not answer in time (retry later)."""


class TargetTls(TargetDown):
    """The target speaks the engine's protocol but the TLS its ``sslmode`` asks for failed; ``hint`` (ours)
    says what to change. Only where the peer has shown it is such a server, so a port is no oracle."""

    def __init__(self, hint: str) -> None:
        super().__init__("tls")
        self.hint = hint


class TargetRefused(Exception):
    """The target refused the engine's admin credentials or lacks a privilege they need."""


class TargetRejected(Exception):
    """The target refused what a role asked of it (a statement, a vhost); ``detail`` and ``details`` are ours,
    safe to show; ``cause`` (an upstream status) is for the log only."""

    def __init__(self, detail: str, *, cause: str = "", **details: str) -> None:
        super().__init__(detail)
        self.details = details
        self.cause = cause


@dataclass(frozen=True)
class Limits:
    """What the operator lets roles grant (``COFFER_ENGINE_RABBITMQ_TAGS``, ``COFFER_ENGINE_REDIS_ALLOW``)."""

    #: RabbitMQ user tags a role may give its users (none by default)
    rabbitmq_tags: frozenset[str] = frozenset()
    #: Redis categories (``@admin``, ``@dangerous``, ``@all``) and commands (``config``) a role may grant
    #: beyond what is refused by default (lowercase)
    redis_allow: frozenset[str] = frozenset()
    #: PostgreSQL targets older than 16, whose CREATEROLE admins can grant themselves the server-program
    #: and server-file roles within one statement (``COFFER_ENGINE_POSTGRESQL_LEGACY``); refused by default
    postgresql_legacy: bool = False


@dataclass(frozen=True)
class Reach:
    """How an engine reaches its target: the operator's allow-list, name resolution, the time allowed,
    and what roles may grant there."""

    policy: OutboundPolicy
    timeout: float
    #: connections an engine may hold open to its target (per replica)
    connections: int = 8
    lookup: Lookup = system_lookup
    limits: Limits = Limits()

    async def address(self, host: str, port: int) -> str:
        """The checked address of ``host:port`` (``invalid_config`` when the operator has not allowed it)."""
        try:
            return await check_host(host, port, self.policy, self.lookup)
        except OutboundRefused as exc:
            raise InvalidConfig(f"the engine's address is refused: {exc}", details={"field": "config"}) from None


def new_username(role: str) -> str:
    """``v-<role>-<12 hex>``: which role it came from, readable in the target's logs, never guessable."""
    return f"v-{role[:24]}-{secrets.token_hex(6)}"


def new_password() -> str:
    """32 characters of ``[A-Za-z0-9_-]``: safe inside any quoting a template uses."""
    return secrets.token_urlsafe(24)


def field_of(raw: dict[str, Any], name: str, kind: type, *, required: bool = True, default: Any = None,
             max_length: int = 2000) -> Any:
    """One config field, checked (``invalid_config`` naming the field, never echoing its value)."""
    if name not in raw or raw[name] is None:
        if required:
            raise InvalidConfig(f"the engine config needs '{name}'", details={"field": f"config.{name}"})
        return default
    value = raw[name]
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidConfig(f"config.{name} must be an integer", details={"field": f"config.{name}"})
    if not isinstance(value, kind):
        raise InvalidConfig(f"config.{name} must be a {kind.__name__}", details={"field": f"config.{name}"})
    if isinstance(value, str) and (len(value) > max_length or (kind is str and "\x00" in value)):
        raise InvalidConfig(f"config.{name} is too long or holds a NUL", details={"field": f"config.{name}"})
    return value


def only_fields(raw: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(k for k in raw if k not in allowed)
    if unknown:
        raise InvalidConfig(f"unknown config field(s): {', '.join(u[:40] for u in unknown[:5])}",
                            details={"field": "config", "allowed": list(allowed)})


def role_error(message: str, field: str) -> InvalidRole:
    return InvalidRole(message, details={"field": field})


class Engine(ABC):
    """One configured engine: its public config, its (unsealed) secret config, and how to reach it."""

    type: ClassVar[str]
    #: the role body fields this type uses (others must be absent)
    role_fields: ClassVar[tuple[str, ...]]

    def __init__(self, public: dict[str, Any], secret: dict[str, Any], reach: Reach) -> None:
        self.public = public
        self.secret = secret
        self.reach = reach

    @classmethod
    @abstractmethod
    def parse_config(cls, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The config as given → ``(public, secret)``; ``invalid_config`` when malformed."""

    @classmethod
    @abstractmethod
    def role_spec(cls, body: dict[str, Any], limits: Limits = Limits()) -> dict[str, Any]:
        """The type's part of a role body, checked against the operator's ``limits`` (``invalid_role``; the
        defaults, nothing beyond, when none are given); run again on a stored role at every lease (the
        operator may have narrowed the limits since)."""

    @abstractmethod
    async def check(self) -> None:
        """Connect with the admin credentials and check they can do what leases need."""

    @abstractmethod
    async def create_user(self, spec: dict[str, Any], username: str, password: str, expires: datetime) -> None:
        """A user that works at once; ``expires`` is the lease's last possible moment."""

    @abstractmethod
    async def revoke_user(self, spec: dict[str, Any], username: str) -> None:
        """The user gone and its sessions ended; a user already gone is success."""

    @abstractmethod
    async def rotate_admin(self, password: str) -> None:
        """Set the admin's password to ``password`` in the target (then the caller keeps only it)."""

    async def close(self) -> None:  # noqa: B027 - engines holding no connections have nothing to close
        """Let go of connections held for this engine."""
