"""The ``postgresql`` engine: roles made by SQL templates, removed with their sessions and objects.

Config ``{connection_url, password?, username?, sslmode?, ca_certificate?}``:
the URL names an admin role with ``CREATEROLE`` that is a member of
``pg_signal_backend`` (to end leased sessions).

The admin is never a superuser, nor a member (directly or through other
roles) of a superuser role, ``pg_execute_server_program``,
``pg_read_server_files`` or ``pg_write_server_files``: tenants write the
creation statements, so a superuser admin would run the tenant's SQL — and
programs, and file reads — on the database host. Checked when the engine is
created, before every admin rotation, and in every credentials request: a
guard runs before each creation template in the same message (no extra
round trip) and another after the last, which rolls the whole creation back
when the statements made the admin or the new user one of those. On
PostgreSQL 15 and older a ``CREATEROLE`` admin may grant itself those
roles: a guard stops the next template, but what one template (a ``DO``
block, two statements in one string — or two templates quoting the guard
between them away) does with such a grant before a guard sees it can't be
undone. The first and the last guard can't be quoted away (nothing of the
tenant's stands on both sides); the whole creation is rolled back by the
last. PostgreSQL 16 and newer, where ``CREATEROLE`` grants only roles it
administers, close the rest: older servers are refused unless the operator
accepts them (``COFFER_ENGINE_POSTGRESQL_LEGACY``). ``sslmode`` is
``disable``, ``require`` (the default: encrypted, the server's certificate
not checked — libpq's meaning) or ``verify-full`` (checked against
``ca_certificate`` or the system's trust store, and the host name).

Passwords reach the target only as SCRAM-SHA-256 verifiers (RFC 5802/7677,
computed here): ``{{password}}`` in a template renders as the verifier, which
PostgreSQL stores as it is, so a server logging its DDL
(``log_statement = ddl``) never writes a leased or an admin password.

Revocation (every lease, whatever the role's own ``revocation_statements``,
which run first): ``NOLOGIN`` committed (no new sessions from then on), then
in one transaction ``pg_terminate_backend`` of every session of the user,
``REASSIGN OWNED`` to the admin, ``DROP OWNED`` and ``DROP ROLE`` — a user
owning tables goes cleanly, in the engine's database. Statements go as one
simple-protocol message each step: a credentials request costs the target
one round trip, a revocation two.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import structlog

from services.lease.engines.base import (
    Engine,
    Limits,
    TargetDown,
    TargetRefused,
    TargetRejected,
    TargetTls,
    field_of,
    only_fields,
)
from services.lease.engines.pg_sql import _ADMIN_GUARD, _KNOWN, _USER_GUARD, _powerful, _statements
from services.lease.engines.pg_sql import SCRAM_ITERATIONS as SCRAM_ITERATIONS
from services.lease.engines.pg_sql import SERVER_ROLES as SERVER_ROLES
from services.lease.engines.pg_sql import guard as guard
from services.lease.engines.pg_sql import quote_ident as quote_ident
from services.lease.engines.pg_sql import quote_literal as quote_literal
from services.lease.engines.pg_sql import render as render
from services.lease.engines.pg_sql import scram_verifier as scram_verifier
from shared.cpu import run_cpu
from shared.errors import InvalidConfig

log = structlog.get_logger("coffer.lease.postgresql")

SSLMODES = ("disable", "require", "verify-full")
NO_TLS = ("the server does not offer TLS: turn ssl on there, or set sslmode to disable on a network you "
          "trust")
CERT_REFUSED = ("the server's certificate was not accepted: with sslmode verify-full it must chain to "
                "ca_certificate (or the system's trust store) and name the host; sslmode require encrypts "
                "without checking it")

#: errors that mean "could not talk to the server" (retry later), as opposed to its answers
_DOWN = (OSError, TimeoutError, ConnectionError, ssl.SSLError, asyncpg.CannotConnectNowError,
         asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, asyncpg.TooManyConnectionsError)
_REFUSED = (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError)

TOO_POWERFUL = "the admin role is too powerful: superuser or server-file/program roles are not allowed"
TOO_OLD = ("PostgreSQL 16 or newer is required: on older versions a CREATEROLE admin can grant itself "
           "server-program roles (the operator may accept older servers: COFFER_ENGINE_POSTGRESQL_LEGACY)")


class PostgresEngine(Engine):
    type = "postgresql"
    role_fields = ("creation_statements", "revocation_statements")

    def __init__(self, public: dict[str, Any], secret: dict[str, Any], reach: Any) -> None:
        super().__init__(public, secret, reach)
        self._pool: asyncpg.Pool | None = None

    # -- config and roles --------------------------------------------------------------------

    @classmethod
    def parse_config(cls, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        only_fields(raw, ("connection_url", "username", "password", "sslmode", "ca_certificate"))
        url = field_of(raw, "connection_url", str)
        try:
            parts = urlsplit(url)
            port = parts.port or 5432
        except ValueError:
            raise InvalidConfig("config.connection_url is not a URL",
                                details={"field": "config.connection_url"}) from None
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise InvalidConfig("config.connection_url must be postgresql://user:password@host:port/database",
                                details={"field": "config.connection_url"})
        if parts.query or parts.fragment:
            raise InvalidConfig("config.connection_url takes no parameters: use config.sslmode",
                                details={"field": "config.connection_url"})
        database = unquote(parts.path.lstrip("/")) or "postgres"
        username = field_of(raw, "username", str, required=False, max_length=63) or unquote(parts.username or "")
        password = field_of(raw, "password", str, required=False, max_length=1000) or unquote(parts.password or "")
        if not username or not password:
            raise InvalidConfig("the engine needs the admin's username and password (in the URL or as fields)",
                                details={"field": "config.connection_url"})
        sslmode = field_of(raw, "sslmode", str, required=False, default="require")
        if sslmode not in SSLMODES:
            raise InvalidConfig(f"config.sslmode is one of {', '.join(SSLMODES)}", details={"field": "config.sslmode"})
        ca = field_of(raw, "ca_certificate", str, required=False, max_length=64_000)
        if ca is not None:
            try:
                ssl.create_default_context(cadata=ca)
            except (ssl.SSLError, ValueError):
                raise InvalidConfig("config.ca_certificate is not a PEM certificate",
                                    details={"field": "config.ca_certificate"}) from None
        if any(c in database + username for c in "\x00/\\") or len(database) > 63 or len(username) > 63:
            raise InvalidConfig("the database or user name is not one PostgreSQL accepts",
                                details={"field": "config.connection_url"})
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        public = {"connection_url": f"postgresql://{username}@{shown}:{port}/{database}", "host": host, "port": port,
                  "database": database, "username": username, "sslmode": sslmode, "ca_certificate": ca}
        return public, {"password": password}

    @classmethod
    def role_spec(cls, body: dict[str, Any], limits: Limits = Limits()) -> dict[str, Any]:
        return {"creation_statements": _statements(body, "creation_statements", required=True, allowed=_KNOWN),
                "revocation_statements": _statements(body, "revocation_statements", required=False,
                                                     allowed={"name"})}

    # -- connections -------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | bool:
        mode = self.public["sslmode"]
        if mode == "disable":
            return False
        if mode == "require":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cadata=self.public.get("ca_certificate") or None)

    async def _connect(self, password: str) -> asyncpg.Connection:
        return await self._open(asyncpg.connect, password)

    async def _open(self, opener: Any, password: str, **extra: Any) -> Any:
        host, port = self.public["host"], self.public["port"]
        address = await self.reach.address(host, port)
        # verify-full checks the certificate against the name, so it connects by the name (checked
        # above; a rebinding to elsewhere fails the TLS check); every other mode to the checked address
        target = host if self.public["sslmode"] == "verify-full" else address
        try:
            return await opener(host=target, port=port, user=self.public["username"], password=password,
                                database=self.public["database"], ssl=self._ssl(), timeout=self.reach.timeout,
                                command_timeout=self.reach.timeout, statement_cache_size=0,
                                server_settings={"application_name": "coffer-lease"}, **extra)
        except _REFUSED:
            raise TargetRefused("the target refused the engine's admin credentials") from None
        except asyncpg.PostgresError as exc:
            raise TargetDown(f"postgres {exc.sqlstate}") from None
        except Exception as exc:  # noqa: BLE001 - whatever else is there (another protocol, a silent port)
            raise await self._down(exc, address, port) from None

    async def _down(self, exc: BaseException, address: str, port: int) -> TargetDown:
        """What a failure to connect says: TLS trouble where the peer showed it is PostgreSQL, else nothing."""
        if isinstance(exc, ssl.SSLCertVerificationError):  # it answered 'S' to SSLRequest: PostgreSQL with TLS
            return TargetTls(CERT_REFUSED)
        if isinstance(exc, ssl.SSLError):
            return TargetTls("the TLS handshake with the server failed; check its ssl settings and sslmode")
        # asyncpg says "rejected SSL upgrade" for any first byte but 'S': only PostgreSQL's own 'N' (ssl off
        # on the server) is told apart, so an HTTP or SSH port still reads like a closed one
        if "rejected SSL upgrade" in str(exc) and await self._refuses_tls(address, port):
            return TargetTls(NO_TLS)
        return TargetDown(type(exc).__name__)

    async def _refuses_tls(self, address: str, port: int) -> bool:
        """Does ``address:port`` answer PostgreSQL's SSLRequest with its 'N' (a server with ssl off)?"""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(address, port), self.reach.timeout)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(struct.pack("!ll", 8, 80877103))  # SSLRequest
            return await asyncio.wait_for(reader.read(1), self.reach.timeout) == b"N"
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            self._pool = await self._open(asyncpg.create_pool, self.secret["password"], min_size=0,
                                          max_size=self.reach.connections, max_inactive_connection_lifetime=60)
        return self._pool

    async def _run(self, work: Any) -> Any:
        """``work(connection)`` on a pooled admin connection; the target's errors as ours."""
        pool = await self.pool()
        try:
            async with pool.acquire(timeout=self.reach.timeout) as conn:
                return await work(conn)
        except _REFUSED:
            raise TargetRefused("the target refused the engine's admin credentials") from None
        except (TargetRejected, TargetRefused):
            raise
        except asyncpg.InsufficientPrivilegeError:
            raise TargetRefused("the engine's admin lacks a privilege this needs") from None
        except _DOWN as exc:  # the pool connects here, on first use
            host, port = self.public["host"], self.public["port"]
            raise await self._down(exc, await self.reach.address(host, port), port) from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.terminate()

    # -- what leases need --------------------------------------------------------------------------

    async def _privileges(self, conn: asyncpg.Connection) -> None:
        """The admin can do what leases need, and no more than the engine allows (``TargetRefused``); the
        server is 16 or newer unless the operator accepts older ones."""
        row = await conn.fetchrow(
            "SELECT rolcreaterole, pg_has_role(session_user, 'pg_signal_backend', 'MEMBER') AS signal,"
            " current_setting('server_version_num')::int AS version,"
            f" {_powerful('session_user', chr(39))} AS powerful FROM pg_roles WHERE rolname = session_user")
        if row is None or row["powerful"]:
            raise TargetRefused(TOO_POWERFUL)
        if row["version"] < 160000 and not self.reach.limits.postgresql_legacy:
            raise TargetRefused(TOO_OLD)
        if not row["rolcreaterole"]:
            raise TargetRefused("the engine's admin needs CREATEROLE")
        if not row["signal"]:
            raise TargetRefused("the engine's admin needs membership of pg_signal_backend (to end sessions)")

    async def check(self) -> None:
        await self._run(self._privileges)

    async def create_user(self, spec: dict[str, Any], username: str, password: str, expires: datetime) -> None:
        verifier = await run_cpu(scram_verifier, password)
        values = {"name": username, "password": verifier,
                  "expiration": expires.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")}
        # one simple-protocol message: the statements, between the guards, run as one implicit transaction,
        # in one round trip (a newline before each ";": a template's trailing -- comment ends there)
        # the admin guard before every template (a grant made by one is refused before the next runs), the
        # admin and user guard after the last
        parts = [p for s in spec["creation_statements"] for p in (guard(None), render(s, values))]
        script = "\n;\n".join([*parts, guard(username)])

        async def create(conn: asyncpg.Connection) -> None:
            try:
                await conn.execute(script)
            except asyncpg.InsufficientPrivilegeError:
                raise
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == _ADMIN_GUARD:
                    raise TargetRefused(TOO_POWERFUL) from None
                if exc.sqlstate == _USER_GUARD:
                    raise TargetRejected("the role's creation statements grant superuser or server-file/program"
                                         " roles, which are not allowed") from None
                # the server's message may quote the statement: only its SQLSTATE goes on
                raise TargetRejected("the role's creation statements failed in the target",
                                     sqlstate=str(exc.sqlstate)) from None
        await self._run(create)

    async def revoke_user(self, spec: dict[str, Any], username: str) -> None:
        role, literal = quote_ident(username), quote_literal(username)
        # the role's own statements between admin guards, like creation's (they are the tenant's SQL too)
        custom = "\n;\n".join([p for s in spec.get("revocation_statements") or ()
                                for p in (guard(None), render(s, {"name": username}))])
        # after NOLOGIN has committed no new session can start, so the terminate below ends them all;
        # the rest is one implicit transaction in one round trip
        removal = (f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {literal};"
                   f" GRANT {role} TO CURRENT_USER; REASSIGN OWNED BY {role} TO CURRENT_USER;"
                   f" DROP OWNED BY {role}; DROP ROLE {role}")

        async def revoke(conn: asyncpg.Connection) -> None:
            try:
                await conn.execute(f"ALTER ROLE {role} NOLOGIN")
            except asyncpg.UndefinedObjectError:
                return  # gone already (removed before, or never made)
            try:
                if custom:
                    try:
                        await conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                           f" WHERE usename = {literal};\n{custom}\n;\n{guard(None)}")
                    except asyncpg.PostgresError as exc:
                        if exc.sqlstate != _ADMIN_GUARD:
                            raise
                        # the admin is (or the statements made it) too powerful to run the tenant's SQL: the
                        # user goes all the same, by the engine's own statements (rolled back: theirs)
                        log.warning("engine_admin_too_powerful", action="revoke")
                await conn.execute(removal)
            except asyncpg.UndefinedObjectError:
                return  # the role's own revocation statements dropped it
            except asyncpg.InsufficientPrivilegeError:
                raise
            except asyncpg.PostgresError as exc:
                raise TargetRejected("the target refused to remove the user", sqlstate=str(exc.sqlstate)) from None
        await self._run(revoke)

    async def rotate_admin(self, password: str) -> None:
        verifier = await run_cpu(scram_verifier, password)

        async def alter(conn: asyncpg.Connection) -> None:
            await self._privileges(conn)  # an admin made superuser since is not one the engine keeps using
            await conn.execute(f"ALTER ROLE CURRENT_USER PASSWORD '{verifier}'")
        await self._run(alter)
        check = await self._connect(password)  # the new password works before anything forgets the old
        await check.close()
