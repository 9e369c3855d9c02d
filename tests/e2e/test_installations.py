"""``make run-distributed`` never touches another installation (issue #28, item 5).

RabbitMQ users and PostgreSQL roles are global to the broker and the cluster. Each installation (its
database and its vhost) gets names of its own when ``COFFER_SCHEMA_PREFIX`` is unset, marks what it makes,
and refuses to reset the passwords of users or roles it did not make unless it is told to take them over.
Real launchers (``python -m services.distributed``) on the one broker and the one cluster of the test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp
import asyncpg
import pytest
from yarl import URL

from services.provision import (
    TAKE_OVER_ENV,
    amqp_user,
    default_prefix,
    installation_id,
    installation_mark,
    pg_role,
    provision,
)
from shared.config import Settings
from shared.registry import SERVICES
from tests.conftest import AMQP_BASE, PG_ADMIN, Api, free_port, rabbitmqctl
from tests.e2e.test_run_modes import Proc, spawn, wait_healthy

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.long]


@dataclass
class Place:
    """A database and a vhost of a test's own, and the users and roles made on them (removed at the end)."""

    database: str
    vhost: str
    prefixes: set[str] = field(default_factory=set)

    @property
    def dsn(self) -> str:
        return PG_ADMIN.rsplit("/", 1)[0] + f"/{self.database}"

    @property
    def amqp(self) -> str:
        return f"{AMQP_BASE}/{self.vhost}"


@pytest.fixture
async def places() -> AsyncIterator[list[Place]]:
    made = [Place(f"coffer_inst_{secrets.token_hex(3)}", f"coffer_inst_{secrets.token_hex(3)}") for _ in range(2)]
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        for place in made:
            await admin.execute(f'CREATE DATABASE "{place.database}"')
            rabbitmqctl("add_vhost", place.vhost)
            rabbitmqctl("set_permissions", "-p", place.vhost, "guest", ".*", ".*", ".*")
    finally:
        await admin.close()
    yield made
    prefixes = {prefix for place in made for prefix in place.prefixes}
    for user in set(rabbitmq_hashes()) & {amqp_user(prefix, s) for prefix in prefixes for s in SERVICES}:
        with contextlib.suppress(subprocess.CalledProcessError):
            rabbitmqctl("delete_user", user)
    for place in made:
        with contextlib.suppress(subprocess.CalledProcessError):
            rabbitmqctl("delete_vhost", place.vhost)
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        for place in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{place.database}" WITH (FORCE)')
        roles = {pg_role(prefix, s) for prefix in prefixes for s in SERVICES}
        for role in await admin.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", list(roles)):
            await admin.execute(f'DROP ROLE "{role[0]}"')  # their databases are gone, and with them all they owned
    finally:
        await admin.close()


def rabbitmq_hashes() -> dict[str, str]:
    """Every broker user's password hash (a reset changes it: the salt is new each time)."""
    doc = json.loads(rabbitmqctl("export_definitions", "-", "--format", "json", "--quiet"))
    return {u["name"]: u["password_hash"] for u in doc["users"]}


def rabbitmq_tags() -> dict[str, list[str]]:
    return {row["user"]: row["tags"] for row in json.loads(rabbitmqctl("-q", "list_users", "--formatter", "json"))}


async def pg_verifiers(roles: list[str]) -> dict[str, str]:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        return dict(await admin.fetch("SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[])",
                                      roles))
    finally:
        await admin.close()


class Installation:
    """One ``make run-distributed`` on a place, with COFFER_SCHEMA_PREFIX unset unless given."""

    def __init__(self, place: Place, tmp: Path, http: aiohttp.ClientSession, prefix: str | None = None) -> None:
        self.place, self.port = place, free_port()
        self.prefix = default_prefix(place.database, place.vhost) if prefix is None else prefix
        place.prefixes.add(self.prefix)
        self.env = {"COFFER_AMQP_URL": place.amqp, "COFFER_DATABASE_URL": place.dsn,
                    "COFFER_HTTP_PORT": str(self.port), "COFFER_DATA_DIR": str(tmp), "COFFER_HEALTH_TIMEOUT": "1.5"}
        if prefix is not None:
            self.env["COFFER_SCHEMA_PREFIX"] = prefix
        self.api = Api(f"http://127.0.0.1:{self.port}", http)
        self.proc: Proc | None = None

    @property
    def users(self) -> list[str]:
        return [amqp_user(self.prefix, s) for s in SERVICES]

    @property
    def roles(self) -> list[str]:
        return [pg_role(self.prefix, s) for s in SERVICES]

    async def start(self, *args: str) -> Proc:
        self.proc = await spawn("services.distributed", self.env, *args)
        return self.proc

    async def up(self) -> None:
        assert self.proc is not None
        await wait_healthy(self.api, self.proc)
        status, init, _ = await self.api.request("POST", "/v1/sys/init", token=None)
        assert status == 201, init
        self.api.token = init["token"]

    async def round_trip(self, value: str) -> None:
        path = f"/v1/secrets/inst/{secrets.token_hex(3)}"
        status, body, _ = await self.api.request("PUT", path, json={"value": value})
        assert status == 201, body
        status, body, _ = await self.api.request("GET", path)
        assert (status, body["value"]) == (200, value), body

    async def healthy(self) -> bool:
        try:
            status, body, _ = await self.api.request("GET", "/v1/sys/health", token=None)
        except aiohttp.ClientError:
            return False
        return status == 200 and body["status"] == "ok"


async def secrets_schema_tables(dsn: str, schema: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)]
    finally:
        await conn.close()


@pytest.mark.timeout(300)
async def test_two_installations_on_one_broker_and_cluster_leave_each_other_alone(
    places: list[Place], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    first, second = (Installation(p, tmp_path / str(i), http) for i, p in enumerate(places))
    assert first.prefix != second.prefix and not set(first.users) & set(second.users)
    try:
        await first.start()
        await first.up()
        await first.round_trip("v-first-before")
        hashes, verifiers = rabbitmq_hashes(), await pg_verifiers(first.roles)
        before = ({u: hashes[u] for u in first.users}, verifiers)
        assert len(before[1]) == len(SERVICES)
        mark = installation_mark(installation_id(first.place.database, first.place.vhost))
        assert all(rabbitmq_tags()[u] == [mark] for u in first.users)

        await second.start()
        await second.up()
        await second.round_trip("v-second")
        assert first.proc is not None and second.proc is not None
        assert f"prefixed {second.prefix!r}" in second.proc.output, second.proc.output
        # the second run made its own users and roles: the first's passwords are the ones it was started with
        hashes = rabbitmq_hashes()
        assert ({u: hashes[u] for u in first.users}, await pg_verifiers(first.roles)) == before
        assert await first.healthy()
        await first.round_trip("v-first-after")

        # the first's processes log in again with the credentials they were given (a reset would lock them out)
        rabbitmqctl("close_all_connections", "-p", first.place.vhost, "test: log in again")
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1)",
                                first.roles)
        finally:
            await admin.close()
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            try:
                await first.round_trip("v-first-reconnected")
                break
            except AssertionError:
                assert asyncio.get_running_loop().time() < deadline, first.proc.output[-3000:]
                await asyncio.sleep(0.5)
        assert await second.healthy()

        # a third run that would take the first's names (its prefix set by hand) is refused, and changes nothing
        third = Installation(second.place, tmp_path / "third", http, prefix=first.prefix)
        refused = await third.start()
        assert await asyncio.wait_for(refused.proc.wait(), 60) == 1
        await refused.stop()
        assert "refused" in refused.output and "--take-over" in refused.output, refused.output
        assert f"RabbitMQ user {first.users[0]} (made for another installation" in refused.output, refused.output
        assert "coffer: started" not in refused.output
        hashes = rabbitmq_hashes()
        assert ({u: hashes[u] for u in first.users}, await pg_verifiers(first.roles)) == before
        assert await first.healthy() and await second.healthy()
    finally:
        for inst in (first, second):
            if inst.proc is not None:
                await inst.proc.stop()
    assert first.proc.output.count("coffer: stopped ") == len(SERVICES)


@pytest.mark.timeout(180)
async def test_users_and_roles_no_provisioning_made_are_refused_unless_taken_over(
    places: list[Place], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    place = places[0]
    prefix = "u" + secrets.token_hex(3) + "_"
    place.prefixes.add(prefix)
    user, role, password = amqp_user(prefix, "secrets"), pg_role(prefix, "secrets"), secrets.token_urlsafe(16)
    # made by hand (or by a version before marks): someone's processes may log in with them
    rabbitmqctl("add_user", user, password)
    rabbitmqctl("set_permissions", "-p", place.vhost, user, "^$", "^$", "^$")
    admin = await asyncpg.connect(place.dsn)
    try:
        await admin.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    finally:
        await admin.close()

    verifier = await pg_verifiers([role])

    async def untouched() -> tuple[bool, bool]:
        """Whether the hand-made user still logs in with its password, and the role has its verifier (local
        PostgreSQL may trust 127.0.0.1, so a login would prove nothing there)."""
        try:
            conn = await aio_pika.connect(str(URL(place.amqp).with_user(user).with_password(password)), timeout=5)
            await conn.close()
            rabbit = True
        except aio_pika.exceptions.AMQPConnectionError:
            rabbit = False
        return rabbit, await pg_verifiers([role]) == verifier

    launcher = Installation(place, tmp_path, http, prefix=prefix)
    refused = await launcher.start()
    assert await asyncio.wait_for(refused.proc.wait(), 60) == 1
    await refused.stop()
    assert "--take-over" in refused.output and f"{TAKE_OVER_ENV}=1" in refused.output, refused.output
    assert f"RabbitMQ user {user} (no installation's mark" in refused.output, refused.output
    assert f"PostgreSQL role {role} (no installation's mark" in refused.output, refused.output
    assert "coffer: started" not in refused.output
    assert await untouched() == (True, True)
    # both servers are checked before either is changed: not even the other services' users were made
    assert amqp_user(prefix, "gateway") not in rabbitmq_tags()
    assert not await pg_verifiers([pg_role(prefix, "gateway")])

    settings = Settings(amqp_url=place.amqp, database_url=place.dsn, schema_prefix=prefix)
    said: list[str] = []
    with pytest.raises(SystemExit, match="--take-over"):
        await provision(settings, take_over=False, say=said.append)
    creds = await provision(settings, take_over=True, say=said.append)
    assert creds["secrets"].amqp_user == user and await untouched() == (False, False)
    mark = installation_mark(installation_id(place.database, place.vhost))
    assert rabbitmq_tags()[user] == [mark]
    # taken over, they are this installation's: the next run needs no force
    again = await provision(settings, take_over=False, say=said.append)
    assert again["secrets"].pg_role == role


@pytest.mark.timeout(120)
async def test_an_earlier_versions_installation_keeps_its_data_under_its_own_new_roles(places: list[Place]) -> None:
    """Upgrade: schemas without prefix, owned by roles no provisioning marked (an earlier version's
    ``coffer_<service>``; stand-ins here, whose names no real installation uses). COFFER_SCHEMA_PREFIX stays
    unset: the schemas keep their names and data, and pass to this installation's new roles; the earlier
    roles are left as they are."""
    place = places[0]
    old = "l" + secrets.token_hex(3) + "_"
    place.prefixes.add(old)
    password = secrets.token_urlsafe(16)
    admin = await asyncpg.connect(place.dsn)
    try:
        for service in SERVICES:
            await admin.execute(f"CREATE ROLE \"{pg_role(old, service)}\" LOGIN PASSWORD '{password}'")
            await admin.execute(f'CREATE SCHEMA "{service}" AUTHORIZATION "{pg_role(old, service)}"')
        await admin.execute(f'SET ROLE "{pg_role(old, "secrets")}"')
        await admin.execute("CREATE TABLE secrets.kept (id serial, value text)")
        await admin.execute("INSERT INTO secrets.kept (value) VALUES ('from before')")
        await admin.execute("RESET ROLE")
    finally:
        await admin.close()
    said: list[str] = []
    creds = await provision(Settings(amqp_url=place.amqp, database_url=place.dsn), take_over=False, say=said.append)
    new = default_prefix(place.database, place.vhost)
    place.prefixes.add(new)
    assert creds["secrets"].pg_role == pg_role(new, "secrets")
    conn = await asyncpg.connect(creds["secrets"].database_url)
    try:
        assert await conn.fetchval("SELECT value FROM secrets.kept") == "from before"
        await conn.execute("INSERT INTO secrets.kept (value) VALUES ('after')")  # its sequence came along
    finally:
        await conn.close()
    assert any(f"schema secrets and its tables passed from {pg_role(old, 'secrets')}" in line for line in said), said
    earlier = await asyncpg.connect(str(URL(place.dsn).with_user(pg_role(old, "secrets")).with_password(password)))
    await earlier.close()  # not reset
