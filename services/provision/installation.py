"""Which installation this is: the users' and roles' names and prefix, the mark provisioning leaves on them,
and the users and roles of those names another installation (or no provisioning) made."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess

import asyncpg
from yarl import URL

from shared.config import Settings


def amqp_user(prefix: str, service: str) -> str:
    return f"coffer-{prefix}{service}"


def pg_role(prefix: str, service: str) -> str:
    return f"coffer_{prefix}{service}"


#: what provisioning marks its users and roles with: ``coffer-installation-<16 hex>`` (``installation_mark``)
MARK = "coffer-installation-"
#: ``1`` (or ``--take-over``): reset users and roles of these names even if another installation (or no
#: provisioning) made them, and take the schemas from their owners
TAKE_OVER_ENV = "COFFER_PROVISION_TAKE_OVER"


def vhost_of(url: URL) -> str:
    return url.path.removeprefix("/") or "/"


def installation_id(database: str, vhost: str) -> str:
    """An installation is its database and its vhost: two on one cluster and broker differ in one of them."""
    return f"{database}/{vhost}"


def _digest(installation: str) -> str:
    return hashlib.sha256(installation.encode()).hexdigest()


def installation_mark(installation: str) -> str:
    """The RabbitMQ user tag (and the first word of the PostgreSQL role comment) of ``installation``."""
    return MARK + _digest(installation)[:16]


def default_prefix(database: str, vhost: str) -> str:
    """The user and role prefix of an installation that sets no ``COFFER_SCHEMA_PREFIX``: stable across runs.

    ``<database, letters and digits, at most 8>_<6 hex of sha256("<database>/<vhost>")>_``: at most 16
    characters, so it matches ``schema_prefix``'s pattern (it may be copied there) and the longest role
    (``coffer_`` + 16 + ``webhooks``) stays far below PostgreSQL's 63.
    """
    slug = re.sub(r"[^a-z0-9]+", "", database.lower())[:8]
    return f"{slug}_{_digest(installation_id(database, vhost))[:6]}_" if slug else \
        f"{_digest(installation_id(database, vhost))[:6]}_"


def user_prefix(settings: Settings, database: str, vhost: str) -> str:
    """``COFFER_SCHEMA_PREFIX`` when set, even empty (the names of earlier versions), else ``default_prefix``."""
    if "schema_prefix" in settings.model_fields_set:
        return settings.schema_prefix
    return default_prefix(database, vhost)


def _mark_of(comment: str | None) -> str | None:
    word = (comment or "").split(" ", 1)[0]
    return word if word.startswith(MARK) else None


def _whose(mark: str | None, comment: str | None = None) -> str:
    if mark is None:
        return "no installation's mark: made by hand, by docker-compose or by a version before this one"
    return f"made for another installation: {comment or mark}"


def rabbitmq_conflicts(users: dict[str, list[str]], names: list[str], installation: str) -> list[str]:
    """The users among ``names`` that exist (``users``: name -> tags) without ``installation``'s mark."""
    mark = installation_mark(installation)
    return [f"RabbitMQ user {name} ({_whose(next((t for t in users[name] if t.startswith(MARK)), None))})"
            for name in names if name in users and mark not in users[name]]


async def rabbitmq_users() -> dict[str, list[str]]:
    """Every user of the broker with its tags."""
    done = await asyncio.create_subprocess_exec("rabbitmqctl", "-q", "list_users", "--formatter", "json",
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await done.communicate()
    if done.returncode != 0:
        raise SystemExit(f"provision: rabbitmqctl list_users failed: {err.decode().strip()[:300]}")
    tags: dict[str, list[str]] = {}
    for row in json.loads(out or b"[]"):
        value = row.get("tags") or []
        tags[row["user"]] = [t.strip() for t in value.split(",")] if isinstance(value, str) else list(value)
    return tags


async def postgres_conflicts(conn: asyncpg.Connection, roles: dict[str, str], installation: str) -> list[str]:
    """Roles named in ``roles`` (role -> its schema) that exist without ``installation``'s mark, and those
    schemas when another installation's role owns them.

    A schema owned by an unmarked role (an earlier version's ``coffer_<service>``, the operator after a
    ``--shared-credentials`` run) is this database's own data: it passes to the new role.
    """
    mark, found = installation_mark(installation), []
    for name, comment in await conn.fetch(
            "SELECT rolname, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = ANY($1::text[])",
            list(roles)):
        if _mark_of(comment) != mark:
            found.append(f"PostgreSQL role {name} ({_whose(_mark_of(comment), comment)})")
    for schema, owner, comment in await conn.fetch(
            "SELECT n.nspname, r.rolname, shobj_description(r.oid, 'pg_authid') FROM pg_namespace n"
            " JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = ANY($1::text[])", list(roles.values())):
        if owner not in roles and _mark_of(comment) not in (None, mark):
            found.append(f"PostgreSQL schema {schema} (owned by {owner}, {_whose(_mark_of(comment), comment)})")
    return found


def refusal(installation: str, conflicts: list[str]) -> str:
    database, _, vhost = installation.partition("/")
    return "\n".join([
        f"provision: refused: installation {installation!r} (database {database!r}, vhost {vhost!r}) did not make",
        *(f"  - {c}" for c in conflicts),
        "Provisioning resets their passwords (and takes the schemas): the processes using them now would stop",
        "working. If another installation uses them, give this one names of its own: leave COFFER_SCHEMA_PREFIX",
        "unset (users and roles then get a prefix derived from the database and vhost) or set another. If they",
        f"are this installation's (made by an earlier version), take them over: --take-over or {TAKE_OVER_ENV}=1.",
    ])


TAKE_OVER_HELP = (f"reset users and roles of these names even if this installation did not make them, and take "
                  f"their schemas (same as {TAKE_OVER_ENV}=1): their current holders stop working")
