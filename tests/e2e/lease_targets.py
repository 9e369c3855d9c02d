"""The real targets of the lease tests, with admin accounts made for a test module and removed after it.

- PostgreSQL with password authentication and TLS: the ``coffer_leases`` cluster on 127.0.0.1:5433
  that ``.ci/lease-targets`` creates (``make test`` runs it), so leased passwords are really checked;
- Redis on 127.0.0.1:6379 (its ``default`` user, without a password, makes the admin);
- a RabbitMQ node of their own, ``coffer_leases@localhost`` (AMQP on 127.0.0.1:5673, its management API on
  127.0.0.1:15673), that ``.ci/lease-targets`` starts: never the platform's own broker, which no engine may
  target (its administrator ``coffer-leases`` makes the admins and vhosts).

``TcpProxy`` stands between an engine and its target so a test can take the target "down" and bring
it back on the same address, without stopping the machine's servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from tests.conftest import remember_secret

LEASE_PG = os.environ.get("COFFER_TEST_LEASE_PG", "postgresql://postgres:coffer-leases-test@127.0.0.1:5433/postgres")
REDIS = ("127.0.0.1", 6379)
RABBIT_API = os.environ.get("COFFER_TEST_LEASE_RABBIT_API", "http://127.0.0.1:15673")
RABBIT_AMQP = "amqp://{user}:{password}@127.0.0.1:" + os.environ.get("LEASE_RABBIT_PORT", "5673") + "/{vhost}"
RABBIT_NODE = "coffer_leases@localhost"
RABBIT_ROOT = {"Authorization": aiohttp.encode_basic_auth(
    "coffer-leases", os.environ.get("LEASE_RABBIT_PASSWORD", "coffer-leases-test"))}


def pg_port() -> int:
    return int(LEASE_PG.rsplit(":", 1)[1].split("/")[0])


async def drop_leased_pg_roles(conn: asyncpg.Connection, prefix: str = "v-") -> None:
    """Users the tests leased and left behind (a failed test): gone, with what they own."""
    for row in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE $1", prefix + "%"):
        name = '"' + row["rolname"].replace('"', '""') + '"'
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", row[0])
        await conn.execute(f"DROP OWNED BY {name}")
        await conn.execute(f"DROP ROLE {name}")


@contextlib.asynccontextmanager
async def pg_admin(*, create_role: bool = True, signal: bool = True) -> AsyncIterator[dict[str, Any]]:
    """An admin role (CREATEROLE, member of pg_signal_backend) and a schema it owns, where leased users
    may create tables."""
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    user, password = f"coffer_adm_{secrets.token_hex(4)}", remember_secret(secrets.token_urlsafe(18))
    schema = f"lease_{secrets.token_hex(4)}"
    await conn.execute(f"CREATE ROLE {user} LOGIN {'CREATEROLE' if create_role else ''} PASSWORD '{password}'")
    if signal:
        await conn.execute(f"GRANT pg_signal_backend TO {user}")
    await conn.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {user}")
    try:
        yield {"user": user, "password": password, "schema": schema, "port": pg_port(),
               "url": f"postgresql://{user}:{password}@127.0.0.1:{pg_port()}/postgres"}
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.execute(f"REASSIGN OWNED BY {user} TO postgres")
        await conn.execute(f"DROP OWNED BY {user}")
        await conn.execute(f"DROP ROLE {user}")
        await conn.close()


def pg_role_statements(schema: str) -> list[str]:
    return [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        f'GRANT USAGE, CREATE ON SCHEMA {schema} TO "{{{{name}}}}";',
    ]


async def pg_connect(username: str, password: str, **kwargs: Any) -> asyncpg.Connection:
    return await asyncpg.connect(host="127.0.0.1", port=pg_port(), user=username, password=password,
                                 database="postgres", ssl="require", **kwargs)


async def pg_role_exists(name: str) -> bool:
    conn = await asyncpg.connect(LEASE_PG, ssl=False)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def redis_admin() -> AsyncIterator[dict[str, Any]]:
    root = aioredis.Redis(host=REDIS[0], port=REDIS[1], decode_responses=True)
    user, password = f"coffer-adm-{secrets.token_hex(4)}", remember_secret(secrets.token_urlsafe(18))
    await root.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    try:
        yield {"host": REDIS[0], "port": REDIS[1], "username": user, "password": password}
    finally:
        for leftover in await root.execute_command("ACL", "USERS"):
            if leftover.startswith("v-") or leftover == user:
                await root.execute_command("ACL", "DELUSER", leftover)
        await root.aclose()


def redis_as(username: str, password: str) -> aioredis.Redis:
    return aioredis.Redis(host=REDIS[0], port=REDIS[1], username=username, password=password,
                          decode_responses=True, single_connection_client=True)


async def rabbit(method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession(headers=RABBIT_ROOT) as session, \
            session.request(method, RABBIT_API + path, json=body) as response:
        assert response.status < 300 or (method == "DELETE" and response.status == 404), response.status
        return await response.json(content_type=None) if response.status == 200 else None


@contextlib.asynccontextmanager
async def rabbit_admin() -> AsyncIterator[dict[str, Any]]:
    """An administrator user and a vhost of its own."""
    user, password = f"coffer-adm-{secrets.token_hex(4)}", remember_secret(secrets.token_urlsafe(18))
    vhost = f"coffer-lease-{secrets.token_hex(4)}"
    await rabbit("PUT", f"/api/users/{user}", {"password": password, "tags": "administrator"})
    await rabbit("PUT", f"/api/vhosts/{vhost}")
    try:
        yield {"management_url": RABBIT_API, "username": user, "password": password, "vhost": vhost}
    finally:
        await rabbit("DELETE", f"/api/vhosts/{vhost}")
        for leftover in await rabbit("GET", "/api/users") or []:
            if leftover["name"].startswith("v-") or leftover["name"] == user:
                await rabbit("DELETE", f"/api/users/{quote(leftover['name'], safe='')}")


def rabbit_login_works(user: str, password: str) -> bool:
    """Does RabbitMQ accept this user and password (``rabbitmqctl authenticate_user``)? Exit 65 is
    RabbitMQ's "refused"; any other failure is the CLI's (the node busy, a timeout): asked again."""
    for _ in range(5):
        # "--": a generated password may begin with "-", which the CLI would take for an option
        run = subprocess.run(["rabbitmqctl", "-n", RABBIT_NODE, "authenticate_user", "--", user, password],
                             capture_output=True, text=True, timeout=60)
        if run.returncode == 0:
            return True
        if run.returncode == 65:
            return False
        time.sleep(1)
    raise AssertionError(f"rabbitmqctl authenticate_user kept failing: {run.returncode} "
                         f"{run.stderr[-300:].replace(password, '<password>')}")


class TcpProxy:
    """127.0.0.1:<port> → a target; ``stop()`` closes the listener and every connection through it,
    ``start()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}
