"""Per-service credentials for distributed mode: one RabbitMQ user and one PostgreSQL role per service.

Holding one service's credentials is not holding the platform (docs/architecture.md, "Who may say what"):

- RabbitMQ user ``coffer-<prefix><service>``: configure only its own queues
  (``coffer.rpc.<rpc name>``, ``coffer.events.<service>…``, ``coffer.dead.<service>…``,
  ``coffer.bcast.<service>…``); write to the event and dead-letter exchanges,
  the default exchange (RPC replies go through it) and, for services that call
  others, the RPC exchange; read its own queues. Binding a queue needs read on
  the exchange, and all three exchanges are topic exchanges so that RabbitMQ's
  topic permissions (checked with the routing key at ``queue.bind`` and
  ``exchange.bind``, and at every publish) say which keys: on ``coffer.requests``
  bind only ``<its rpc name>.…``, publish only the methods it may call
  (``CALLS``); on ``coffer.events`` publish only the event types it owns
  (``shared.registry.EVENT_OWNERS``), bind only the ones it consumes; on
  ``coffer.dlx`` bind only its own consumers' names, publish nothing (RabbitMQ
  dead-letters without asking). So a queue of any name it may make can hold
  only its own traffic. The exchanges are declared here, by the operator;
  services declare them passively.
- PostgreSQL role ``coffer_<prefix><service>``: owns its schema and nothing
  else (it can't create schemas or read another service's).

Users and roles are global to the broker and the cluster, so each installation has names of its own:
``<prefix>`` is ``COFFER_SCHEMA_PREFIX`` when it is set (even empty), else one derived from the
installation's database and vhost (``default_prefix``). Schemas are named ``COFFER_SCHEMA_PREFIX``
+ service only (they are per database already). What provisioning makes is marked with the installation
(``<database>/<vhost>``): a RabbitMQ user tag and a PostgreSQL role comment, ``coffer-installation-<hash>``.
It refuses to reset the password of a user or role of that name that hasn't this installation's mark, or to
take a schema owned by another installation's role, unless told to (``--take-over``,
``COFFER_PROVISION_TAKE_OVER=1``): that would stop the processes that use them.

Passwords are fresh and random on every run and are never written to disk:
RabbitMQ gets salted SHA-256 hashes (``import_definitions``), PostgreSQL a
SCRAM verifier, so neither server's logs see them. The launcher
(``services.distributed``) hands each process only its own credentials.

    python -m services.provision --env-dir DIR [--take-over]  # writes DIR/<service>.env (0600) for other launchers
    python -m services.provision --compose deploy  # docker-compose's definitions and init script (dev passwords)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import asyncpg
from yarl import URL

from shared.bus.base import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, RPC_EXCHANGE
from shared.bus.rabbit.batch import BATCH_METHOD
from shared.config import Settings
from shared.registry import EVENT_OWNERS, SERVICES, rpc_name

#: what each service may call: rpc name -> its methods (empty: every method). The gateway calls every
#: service; the webhook dispatcher asks ``iam.may`` (the gateway's ``rpc_callers``). The broker refuses any
#: other request at publish; each service checks the sender of every request it runs again.
CALLS: dict[str, dict[str, tuple[str, ...]]] = {
    "gateway": {rpc_name(s): () for s in SERVICES},
    "webhooks": {rpc_name("gateway"): ("may",)},
}
#: services that call other services' RPC
CALLERS = tuple(CALLS)
#: event types each service binds its queues to, as topic patterns (beyond tenant.deleted, which all may)
CONSUMES = {"gateway": r"(policy|token|system)\..*", "webhooks": r".*"}
#: the direct RPC exchange of earlier versions, which every service could bind to: removed on provisioning
LEGACY_RPC_EXCHANGE = "coffer.rpc"


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


def _any(*names: str) -> str:
    return "^(?:" + "|".join(names) + ")$"


def _name(name: str) -> str:
    return re.escape(name)


def consumers(service: str) -> str:
    """The names ``service``'s event consumers may have (``<service>`` or ``<service>-…``), as a regex."""
    return rf"{_name(service)}(?:-[a-z0-9-]+)?"


def rabbit_permissions(service: str) -> dict[str, str]:
    """configure / write / read regexes of ``service``'s RabbitMQ user on the vhost.

    They match queue and exchange names alike: no queue name a service may make is an exchange's. Read on an
    exchange is what binding to it needs; which routing keys is ``topic_permissions``'.
    """
    own = (rf"coffer\.rpc\.{_name(rpc_name(service))}", rf"coffer\.(?:events|dead)\.{consumers(service)}",
           rf"coffer\.bcast\.{consumers(service)}\.[0-9a-f]+")
    rpc, events, dead = (_name(x) for x in (RPC_EXCHANGE, EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE))
    # write on the dead-letter exchange: declaring a queue that dead-letters into it needs it
    exchanges = (events, dead, r"amq\.default", *((rpc,) if service in CALLERS else ()))
    return {"configure": _any(*own), "write": _any(*own, *exchanges), "read": _any(*own, rpc, events, dead)}


def _calls(calls: dict[str, tuple[str, ...]]) -> str:
    """The routing keys of the methods in ``calls`` (with their batches, whose calls the callee checks one by one)."""
    keys = [rf"{_name(rpc)}\.(?:{'|'.join(_name(m) for m in (*methods, BATCH_METHOD))})" if methods
            else rf"{_name(rpc)}\.[^.]+" for rpc, methods in sorted(calls.items())]
    return _any(*keys) if keys else "^$"


def topic_permissions(service: str) -> dict[str, dict[str, str]]:
    """Per exchange, the routing keys ``service`` may publish with (write) and bind its queues with (read).

    ``coffer.requests``: the methods it may call; its own requests only. ``coffer.events``: its own event types;
    the ones it consumes. ``coffer.dlx``: nothing (RabbitMQ dead-letters without this check); its own consumers'.
    """
    owned = sorted(prefix for prefix, owner in EVENT_OWNERS.items() if owner == service)
    return {
        RPC_EXCHANGE: {"write": _calls(CALLS.get(service, {})), "read": _any(rf"{_name(rpc_name(service))}\.[^.]+")},
        EVENTS_EXCHANGE: {"write": rf"^(?:{'|'.join(owned)})\." if owned else "^$",
                          "read": _any(r"tenant\.deleted", *([CONSUMES[service]] if service in CONSUMES else []))},
        DEAD_LETTER_EXCHANGE: {"write": "^$", "read": _any(consumers(service))},
    }


def rabbit_password_hash(password: str) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt + sha256(salt + password))."""
    salt = secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A PostgreSQL SCRAM-SHA-256 verifier (what ``ALTER ROLE … PASSWORD`` stores), made here."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


def definitions(vhost: str, passwords: dict[str, str], prefix: str, mark: str | None = None) -> dict[str, Any]:
    """RabbitMQ definitions: the vhost, the exchanges, and each service's user (tagged ``mark``) and permissions."""
    exchange = {"vhost": vhost, "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
    return {
        "vhosts": [{"name": vhost}],
        # topic exchanges all: RabbitMQ checks topic permissions on no other type
        "exchanges": [{**exchange, "name": name, "type": "topic"}
                      for name in (RPC_EXCHANGE, EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE)],
        "users": [{"name": amqp_user(prefix, s), "password_hash": rabbit_password_hash(p),
                   "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [mark] if mark else []}
                  for s, p in passwords.items()],
        "permissions": [{"user": amqp_user(prefix, s), "vhost": vhost, **rabbit_permissions(s)} for s in passwords],
        "topic_permissions": [{"user": amqp_user(prefix, s), "vhost": vhost, "exchange": exchange, **keys}
                              for s in passwords for exchange, keys in topic_permissions(s).items()],
    }


async def upgrade_exchanges(admin_url: URL) -> None:
    """Bring a broker of an earlier version to today's exchanges, before the definitions are imported.

    ``coffer.dlx`` was direct, a type topic permissions don't apply to (any service could bind to another's
    dead letters), and the consumers' queues name it: deleted and made again as a topic exchange. Its bindings
    go with it; each service binds its dead-letter queues again when it connects (dead letters of consumers
    still running meanwhile would be dropped: provision before starting the services). ``coffer.rpc``, the
    direct RPC exchange, is no longer used: deleted, with any binding a service had added to it.
    """
    conn = await aio_pika.connect(str(admin_url), timeout=10)
    try:
        channel = await conn.channel()
        try:
            await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        except aiormq.exceptions.ChannelPreconditionFailed:  # another type
            channel = await conn.channel()
            await channel.exchange_delete(DEAD_LETTER_EXCHANGE)
            await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        await channel.exchange_delete(LEGACY_RPC_EXCHANGE)  # absent: fine
    finally:
        await conn.close()


async def provision_rabbitmq(admin_url: URL, passwords: dict[str, str], prefix: str, *,
                             installation: str | None = None, take_over: bool = False) -> None:
    """Each service's user, marked as ``installation``'s (default: this vhost's, in no database named).

    Refused (SystemExit) if a user of those names exists without that mark, unless ``take_over``.
    """
    vhost = vhost_of(admin_url)
    installation = installation or installation_id("", vhost)
    names = [amqp_user(prefix, s) for s in passwords]
    if not take_over and (conflicts := rabbitmq_conflicts(await rabbitmq_users(), names, installation)):
        raise SystemExit(refusal(installation, conflicts))
    await upgrade_exchanges(admin_url)
    # on standard input, so nothing is written to disk (the CLI passes it to the node)
    done = await asyncio.create_subprocess_exec("rabbitmqctl", "import_definitions", stdin=subprocess.PIPE,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    doc = definitions(vhost, passwords, prefix, installation_mark(installation))
    _, err = await done.communicate(json.dumps(doc).encode())
    if done.returncode != 0:
        raise SystemExit(f"provision: rabbitmqctl import_definitions failed: {err.decode().strip()[:300]}")
    for service, password in passwords.items():  # the import is asynchronous: wait until each user logs in
        url = admin_url.with_user(amqp_user(prefix, service)).with_password(password)
        for attempt in range(100):
            try:
                conn = await aio_pika.connect(str(url), timeout=5)
                await conn.close()
                break
            except Exception:  # noqa: BLE001 - not imported yet
                if attempt == 99:
                    raise SystemExit(f"provision: RabbitMQ user for {service} does not log in") from None
                await asyncio.sleep(0.1)


async def provision_postgres(admin_dsn: str, passwords: dict[str, str], settings: Settings, *,
                             prefix: str | None = None, installation: str | None = None, take_over: bool = False,
                             say: Callable[[str], None] = print) -> None:
    """Each service's role (``coffer_<prefix><service>``), owning its schema, marked as ``installation``'s.

    ``prefix``: default ``settings.schema_prefix``; ``installation``: default this database with the vhost of
    ``settings.amqp_url``. Refused (SystemExit) if a role of those names exists without that mark, or another
    installation's role owns one of the schemas, unless ``take_over``.
    """
    prefix = settings.schema_prefix if prefix is None else prefix
    conn = await asyncpg.connect(admin_dsn)
    try:
        database = await conn.fetchval("SELECT current_database()")
        vhost = vhost_of(URL(settings.amqp_url.get_secret_value())) if settings.amqp_url else ""
        installation = installation or installation_id(database, vhost)
        comment = f"{installation_mark(installation)} (installation {installation})"
        roles = {pg_role(prefix, service): settings.schema_for(service) for service in passwords}
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('coffer-provision'))")
            if not take_over and (conflicts := await postgres_conflicts(conn, roles, installation)):
                raise SystemExit(refusal(installation, conflicts))
            for (role, schema), password in zip(roles.items(), passwords.values(), strict=True):
                if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role):
                    await conn.execute(f'CREATE ROLE "{role}" LOGIN')
                verifier = await conn.fetchval("SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
                                               role, scram_verifier(password))
                await conn.execute(verifier)
                await conn.execute(await conn.fetchval("SELECT format('COMMENT ON ROLE %I IS %L', $1::text, $2::text)",
                                                       role, comment))
                owner = await conn.fetchval("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1",
                                            schema)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                await conn.execute(f'ALTER SCHEMA "{schema}" OWNER TO "{role}"')
                await conn.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM PUBLIC')
                await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
                # an installation that ran with one shared user, or an earlier version's role: its tables pass
                # to the service's role
                for kind, name in await conn.fetch(
                        "SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.relname FROM pg_class c"
                        " WHERE c.relnamespace = $1::regnamespace AND c.relkind IN ('r', 'p', 'S')"
                        " AND pg_get_userbyid(c.relowner) <> $2"
                        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'a')",
                        schema, role):
                    await conn.execute(f'ALTER {kind} "{schema}"."{name}" OWNER TO "{role}"')
                if owner is not None and owner != role:
                    say(f"coffer: schema {schema} and its tables passed from {owner} to {role}" + (
                        f" ({owner} is left as it is: drop it when nothing uses it any more)"
                        if owner.startswith("coffer_") else ""))
    finally:
        await conn.close()


async def ensure_database(admin_dsn: str, say: Callable[[str], None] = print) -> None:
    """Create the database ``admin_dsn`` names if it doesn't exist yet (a fresh machine)."""
    try:
        conn = await asyncpg.connect(admin_dsn)
    except asyncpg.InvalidCatalogNameError:
        url = URL(admin_dsn)
        server = await asyncpg.connect(str(url.with_path("/postgres")))
        try:
            await server.execute(f'CREATE DATABASE "{url.path.lstrip("/")}"')
        except asyncpg.DuplicateDatabaseError:
            pass  # another launcher made it meanwhile
        finally:
            await server.close()
        say(f"coffer: created database {url.path.lstrip('/')}")
        return
    await conn.close()


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


TAKE_OVER_HELP = (f"reset users and roles of these names even if this installation did not make them, and take "
                  f"their schemas (same as {TAKE_OVER_ENV}=1): their current holders stop working")


#: the passwords of docker-compose.yml: for a laptop, never for anything reachable
DEV_PASSWORDS = {service: f"coffer-dev-only-{service}" for service in SERVICES}


def compose_files(deploy: Path) -> dict[Path, str]:
    """The broker definitions and the PostgreSQL init script docker-compose.yml starts with.

    The same users, permissions, roles and schemas as ``provision``, with the
    fixed ``DEV_PASSWORDS`` (hashed), so the containers need no provisioning step.
    """
    doc = definitions("/", DEV_PASSWORDS, "")
    # definitions loaded at boot replace RabbitMQ's default user: an operator to administer the broker
    doc["users"].append({"name": "operator", "password_hash": rabbit_password_hash("operator-dev-only"),
                         "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ["administrator"]})
    doc["permissions"].append({"user": "operator", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"})
    rabbit = json.dumps(doc, indent=1) + "\n"
    sql = ["-- Generated by `python -m services.provision --compose deploy`. One role per service,",
           "-- owning only its schema; the passwords are docker-compose.yml's dev-only ones (SCRAM verifiers)."]
    for service, password in DEV_PASSWORDS.items():
        role = pg_role("", service)
        sql += [f"CREATE ROLE {role} LOGIN PASSWORD '{scram_verifier(password)}';",
                f"CREATE SCHEMA {service} AUTHORIZATION {role};",
                f"REVOKE ALL ON SCHEMA {service} FROM PUBLIC;"]
    return {deploy / "rabbitmq" / "definitions.json": rabbit,
            deploy / "postgres" / "10-roles.sql": "\n".join(sql) + "\n"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--env-dir", type=Path,
                        help="write <service>.env (mode 0600) with each service's own credentials here")
    parser.add_argument("--compose", type=Path, metavar="DEPLOY_DIR",
                        help="write docker-compose's broker definitions and PostgreSQL init script there")
    parser.add_argument("--take-over", action="store_true", help=TAKE_OVER_HELP)
    args = parser.parse_args()
    if args.compose:
        for path, text in compose_files(args.compose).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"coffer: wrote {path}")
        return
    if not args.env_dir:
        parser.error("give --env-dir (or --compose)")
    creds = asyncio.run(provision(Settings(), take_over=args.take_over or None))
    users = {s: c.amqp_user for s, c in creds.items()}
    args.env_dir.mkdir(parents=True, exist_ok=True)
    for service, c in creds.items():
        path = args.env_dir / f"{service}.env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in c.env(users).items())
        print(f"coffer: wrote {path} (0600)")


if __name__ == "__main__":
    main()
