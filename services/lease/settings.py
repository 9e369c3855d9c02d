"""The lease service's settings, on top of every process's (``shared.config.Settings``).

Dynamic-credential engines live on private networks, so the outbound guard
for them is its own: ``COFFER_ENGINE_ALLOWED_CIDRS`` names the only address
ranges an engine may point at (nothing else, public addresses included).
Empty — the default — allows no engine anywhere: an operator opts in.

Tenants configure engines and write roles; operators don't. So what a role
may grant in its target is the operator's to widen, never the tenant's:
``COFFER_ENGINE_RABBITMQ_TAGS`` lists the RabbitMQ user tags roles may give
(none by default; ``administrator`` only if named), and
``COFFER_ENGINE_REDIS_ALLOW`` the Redis administration a role may grant
(``@admin``, ``@dangerous``, ``@all`` or commands of theirs such as
``config``; none by default). Both are checked when a role is written and
again at every lease, so narrowing them takes effect at once.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from services.lease.engines.base import Limits
from shared.config import Settings, check_cidrs, comma_separated

_TAG = re.compile(r"^[a-z_]{1,40}$")
_REDIS_NAME = re.compile(r"^@?[a-z0-9_-]{1,64}(\|[a-z0-9_-]{1,64})?$")


def _check_tags(value: tuple[str, ...]) -> tuple[str, ...]:
    for tag in value:
        if not _TAG.fullmatch(tag):
            raise ValueError(f"{tag[:40]!r} is not a RabbitMQ user tag")
    return value


def _check_redis_allow(value: tuple[str, ...]) -> tuple[str, ...]:
    value = tuple(v.lower() for v in value)
    for name in value:
        if not _REDIS_NAME.fullmatch(name):
            raise ValueError(f"{name[:40]!r} is not a Redis ACL category (@admin) or command (config, client|kill)")
    return value


class LeaseSettings(Settings):
    #: address ranges engines may connect to (``10.0.0.0/8,127.0.0.0/8``); none by default
    engine_allowed_cidrs: Annotated[tuple[str, ...], NoDecode] = ()
    #: seconds between looks for expired leases and due retries (expiry is acted on within about this)
    lease_sweep_interval: float = Field(1.0, gt=0, le=60)
    #: revocations running at once (each holds a connection to its target)
    lease_revoke_concurrency: int = Field(8, ge=1, le=256)
    #: seconds a target may take to connect or to answer one operation
    engine_timeout: float = Field(10.0, gt=0, le=60)
    #: connections one engine may hold open to its target, per replica
    engine_connections: int = Field(8, ge=1, le=100)

    #: RabbitMQ user tags a rabbitmq role may give its users (``management,monitoring``); none by default,
    #: ``administrator`` never unless named (a leased administrator manages every user of the broker)
    engine_rabbitmq_tags: Annotated[tuple[str, ...], NoDecode] = ()
    #: Redis categories and commands a redis role may grant beyond the default (``@dangerous,config``): by
    #: default none of ``@admin``, ``@dangerous`` (``@all``, ``allcommands``) or their commands (``acl``,
    #: ``config``, ``module``, ``debug``, ``keys``…)
    engine_redis_allow: Annotated[tuple[str, ...], NoDecode] = ()
    #: PostgreSQL targets older than 16 accepted anyway: there a CREATEROLE admin can grant itself
    #: pg_execute_server_program within one of the tenant's statements (a DO block), before any check
    #: sees it — commands on the target's host. Only for targets whose host is the tenant's to run.
    engine_postgresql_legacy: bool = False

    _split_engines = field_validator("engine_allowed_cidrs", "engine_rabbitmq_tags", "engine_redis_allow",
                                     mode="before")(comma_separated)
    _check_engines = field_validator("engine_allowed_cidrs")(check_cidrs)
    _check_tags = field_validator("engine_rabbitmq_tags")(_check_tags)
    _check_redis_allow = field_validator("engine_redis_allow")(_check_redis_allow)

    def engine_limits(self) -> Limits:
        """What roles may grant in their targets, as the engines take it."""
        return Limits(rabbitmq_tags=frozenset(self.engine_rabbitmq_tags),
                      redis_allow=frozenset(self.engine_redis_allow), postgresql_legacy=self.engine_postgresql_legacy)
