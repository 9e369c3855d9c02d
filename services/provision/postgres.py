"""The database side: each service's role with a SCRAM verifier, owning its schema and its tables."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable

import asyncpg
from yarl import URL

from services.provision.installation import (
    installation_id,
    installation_mark,
    pg_role,
    postgres_conflicts,
    refusal,
    vhost_of,
)
from shared.config import Settings


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """A PostgreSQL SCRAM-SHA-256 verifier (what ``ALTER ROLE … PASSWORD`` stores), made here."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}${b64(stored).decode()}:{b64(server).decode()}"


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
