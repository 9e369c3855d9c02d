"""Provisioning an installation: both servers checked, then each service's user and role made with new passwords."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from yarl import URL

from services.provision.installation import (
    TAKE_OVER_ENV,
    amqp_user,
    installation_id,
    pg_role,
    postgres_conflicts,
    rabbitmq_conflicts,
    rabbitmq_users,
    refusal,
    user_prefix,
    vhost_of,
)
from services.provision.postgres import ensure_database, provision_postgres
from services.provision.rabbitmq import provision_rabbitmq
from shared.config import Settings
from shared.registry import SERVICES


@dataclass(frozen=True)
class ServiceCredentials:
    """What one service's processes are given: their own broker and database credentials, nothing else."""

    service: str
    amqp_user: str
    amqp_url: str
    pg_role: str
    database_url: str

    def env(self, users: dict[str, str]) -> dict[str, str]:
        return {"COFFER_AMQP_URL": self.amqp_url, "COFFER_DATABASE_URL": self.database_url,
                "COFFER_BUS_USERS": ",".join(f"{s}={u}" for s, u in users.items())}


async def provision(settings: Settings, *, take_over: bool | None = None,
                    say: Callable[[str], None] = print) -> dict[str, ServiceCredentials]:
    """Create (or update) every service's RabbitMQ user and PostgreSQL role with new passwords.

    ``settings`` hold the operator's (admin) URLs; the answer, each service's own. Nothing is changed on
    either server if a user or role of those names is not this installation's (``take_over``: default
    ``COFFER_PROVISION_TAKE_OVER``).
    """
    if settings.amqp_url is None or settings.database_url is None:
        raise SystemExit("provision: needs COFFER_AMQP_URL and COFFER_DATABASE_URL of an administrator")
    if take_over is None:
        take_over = os.environ.get(TAKE_OVER_ENV, "").lower() in ("1", "true", "yes")
    admin_url, admin_dsn = URL(settings.amqp_url.get_secret_value()), settings.database_url.get_secret_value()
    await ensure_database(admin_dsn, say)
    conn = await asyncpg.connect(admin_dsn)
    try:
        database = await conn.fetchval("SELECT current_database()")
        installation = installation_id(database, vhost_of(admin_url))
        prefix = user_prefix(settings, database, vhost_of(admin_url))
        passwords = {service: secrets.token_urlsafe(24) for service in SERVICES}
        # both servers checked before either is changed
        conflicts = [] if take_over else [
            *rabbitmq_conflicts(await rabbitmq_users(), [amqp_user(prefix, s) for s in SERVICES], installation),
            *await postgres_conflicts(conn, {pg_role(prefix, s): settings.schema_for(s) for s in SERVICES},
                                      installation)]
    finally:
        await conn.close()
    if conflicts:
        raise SystemExit(refusal(installation, conflicts))
    origin = "COFFER_SCHEMA_PREFIX" if "schema_prefix" in settings.model_fields_set else \
        "derived from the database and vhost; COFFER_SCHEMA_PREFIX is unset"
    say(f"coffer: installation {installation!r}: users and roles prefixed {prefix!r} ({origin})")
    await provision_rabbitmq(admin_url, passwords, prefix, installation=installation, take_over=take_over)
    await provision_postgres(admin_dsn, passwords, settings, prefix=prefix, installation=installation,
                             take_over=take_over, say=say)
    creds = {}
    for service, password in passwords.items():
        user, role = amqp_user(prefix, service), pg_role(prefix, service)
        creds[service] = ServiceCredentials(
            service=service, amqp_user=user, pg_role=role,
            amqp_url=str(admin_url.with_user(user).with_password(password)),
            database_url=str(URL(admin_dsn).with_user(role).with_password(password)))
        say(f"coffer: {service}: RabbitMQ user {user}, PostgreSQL role {role} (schema {settings.schema_for(service)})")
    return creds
