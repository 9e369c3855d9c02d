"""The bus is not an open door (issue #11): one RabbitMQ user and one PostgreSQL role per service.

Real RabbitMQ and PostgreSQL: the users, permissions and roles are made by
services.provision, exactly as ``make run-distributed`` makes them, in a vhost
and a schema prefix of this test's own. Each test then tries, with one
service's credentials, what only another service may do.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import asyncpg
import pytest
from pamqp.commands import Basic
from structlog.testing import capture_logs
from yarl import URL

from services.provision import amqp_user, pg_role, provision_postgres, provision_rabbitmq
from shared.bus import RabbitBus
from shared.bus.base import EVENTS_EXCHANGE, RPC_EXCHANGE, decode, encode
from shared.config import Settings
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.errors import Forbidden
from shared.logging import PROCESSORS
from shared.registry import SERVICES
from tests.conftest import AMQP_BASE, rabbitmqctl

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


class Users:
    """Each service's RabbitMQ URL in a private vhost, and the buses started on them."""

    def __init__(self, admin: str) -> None:
        self.prefix = "t" + secrets.token_hex(3) + "_"
        self.passwords = {s: secrets.token_urlsafe(16) for s in SERVICES}
        self.admin = URL(admin)
        self.map = {s: amqp_user(self.prefix, s) for s in SERVICES}
        self.buses: list[RabbitBus] = []

    def url(self, service: str) -> str:
        return str(self.admin.with_user(self.map[service]).with_password(self.passwords[service]))

    async def bus(self, service: str) -> RabbitBus:
        bus = RabbitBus(self.url(service), name=f"auth-{service}", users=self.map, rpc_timeout=2.0,
                        retry_delay=0.01, delivery_limit=2)
        await bus.start()
        self.buses.append(bus)
        return bus


@pytest.fixture(scope="module")
async def provisioned() -> AsyncIterator[Users]:
    """The users of a vhost of this module's own (users are global to the broker: removed at the end)."""
    vhost = f"coffer_auth_{secrets.token_hex(3)}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    u = Users(f"{AMQP_BASE}/{vhost}")
    await provision_rabbitmq(u.admin, u.passwords, u.prefix)
    yield u
    quiet = {"stdout": asyncio.subprocess.DEVNULL, "stderr": asyncio.subprocess.DEVNULL}
    removals = [await asyncio.create_subprocess_exec("rabbitmqctl", "delete_user", name, **quiet)  # type: ignore[arg-type]
                for name in u.map.values()]
    await asyncio.gather(*(r.wait() for r in removals))
    rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
async def users(provisioned: Users) -> AsyncIterator[Users]:
    """The module's users; the buses a test starts are closed after it."""
    yield provisioned
    for bus in provisioned.buses:
        await bus.close()
    provisioned.buses.clear()


async def raw(users: Users, service: str, *, confirms: bool = True) -> tuple[aio_pika.abc.AbstractConnection, Any]:
    """A plain connection with ``service``'s credentials, and an aiormq channel on it."""
    conn = await aio_pika.connect(users.url(service))
    channel = await conn.channel(publisher_confirms=confirms)
    return conn, await channel.get_underlay_channel()


async def test_only_the_gateway_may_call_a_service(users: Users) -> None:
    seen: list[str] = []

    async def get(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        seen.append(ctx.request_id)
        return {"value": "the secret"}

    secrets_bus = await users.bus("secrets")
    await secrets_bus.serve("secrets", {"get": get})
    gateway, webhooks = await users.bus("gateway"), await users.bus("webhooks")
    assert await gateway.call("secrets", "get", {}, RequestContext(request_id="req_gateway")) == {"value": "the secret"}

    with capture_logs(processors=PROCESSORS[:1]) as logs:
        with pytest.raises(Forbidden):  # the dispatcher's credentials may publish RPC (it asks iam.may) ...
            await webhooks.call("secrets", "get", {}, RequestContext(request_id="req_forged"))
    assert seen == ["req_gateway"]  # ... but the secrets service does not run its request
    refused = [e for e in logs if e["event"] == "rpc_refused"]
    assert refused and refused[0]["sender"] == users.map["webhooks"] and refused[0]["method"] == "get"
    # nor any call of a batch (calls issued together travel as one message): each is checked on its own
    outcomes = await asyncio.gather(*(webhooks.call("secrets", "get", {}, RequestContext(request_id=f"req_b{i}"))
                                      for i in range(10)), return_exceptions=True)
    assert all(isinstance(o, Forbidden) for o in outcomes) and seen == ["req_gateway"]


async def test_a_request_put_straight_into_a_service_queue_is_refused(users: Users) -> None:
    """Replies need write on the default exchange, through which any queue can be reached by name."""
    ran: list[str] = []

    async def get(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        ran.append("get")
        return {}

    secrets_bus = await users.bus("secrets")
    await secrets_bus.serve("secrets", {"get": get})
    conn, channel = await raw(users, "pki")
    try:
        reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_reply(message: Any) -> None:
            reply.set_result(message.body)

        await channel.basic_consume("amq.rabbitmq.reply-to", on_reply, no_ack=True)
        with capture_logs(processors=PROCESSORS[:1]) as logs:
            await channel.basic_publish(
                encode({}), routing_key="coffer.rpc.secrets",  # the default exchange, by queue name
                properties=Basic.Properties(reply_to="amq.rabbitmq.reply-to", user_id=users.map["pki"],
                                            headers={"x-tenant-id": "ten_victim"}))
            answer = decode(await asyncio.wait_for(reply, 5))
        assert answer["ok"] is False and answer["error"]["code"] == "forbidden" and ran == []
        assert any(e["event"] == "rpc_refused" for e in logs)
    finally:
        await conn.close()


async def test_a_service_without_rpc_rights_cannot_publish_requests(users: Users) -> None:
    conn, channel = await raw(users, "secrets")
    try:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.basic_publish(b"{}", exchange=RPC_EXCHANGE, routing_key="iam.may",
                                        properties=Basic.Properties(user_id=users.map["secrets"]))
    finally:
        await conn.close()


async def test_a_forged_reply_is_refused_and_the_real_one_taken(users: Users) -> None:
    """The secrets user binds its own queue to another service's method and answers first: ignored."""
    async def may(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await asyncio.sleep(0.3)  # the forger is faster
        return {"allowed": [False]}

    gateway = await users.bus("gateway")
    await gateway.serve("iam", {"may": may}, callers={"may": ("gateway", "webhooks")})
    webhooks = await users.bus("webhooks")
    conn = await aio_pika.connect(users.url("secrets"))
    try:
        channel = await conn.channel()
        rpc = await channel.declare_exchange(RPC_EXCHANGE, passive=True)
        queue = await channel.declare_queue("coffer.rpc.secrets", durable=True)
        await queue.bind(rpc, "iam.may")  # it may bind its own queue to any key of the direct exchange
        raw_channel = await channel.get_underlay_channel()

        async def forge(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            forged = {"ok": True, "result": {"allowed": [True]}}
            await raw_channel.basic_publish(
                encode(forged), routing_key=message.reply_to or "",
                properties=Basic.Properties(correlation_id=message.correlation_id, user_id=users.map["secrets"]))
            # and as a batch reply, naming the call's id inside it
            await raw_channel.basic_publish(
                encode([{"id": message.correlation_id, "r": forged}]), routing_key=message.reply_to or "",
                properties=Basic.Properties(message_type="coffer.batch", user_id=users.map["secrets"]))

        await queue.consume(forge, no_ack=True)
        with capture_logs(processors=PROCESSORS[:1]) as logs:
            answer = await webhooks.call("iam", "may", {"checks": []}, RequestContext())
        assert answer == {"allowed": [False]}  # the gateway's, not the forger's
        forged_seen = [e for e in logs if e["event"] == "rpc_reply_refused" and e["sender"] == users.map["secrets"]]
        assert len(forged_seen) == 2, forged_seen  # the plain one and the batch one
        await queue.unbind(rpc, "iam.may")
    finally:
        await conn.close()


async def test_events_come_only_from_the_service_that_owns_them(users: Users) -> None:
    delivered: dict[str, list[str]] = {"webhooks": [], "gateway-authz": []}

    def handler(consumer: str) -> Any:
        async def on(event: Event, ctx: RequestContext) -> None:
            delivered[consumer].append(event.type)
        return on

    webhooks, gateway, secrets_bus = await users.bus("webhooks"), await users.bus("gateway"), await users.bus("secrets")
    await webhooks.subscribe("webhooks", ["#"], handler("webhooks"))
    await gateway.subscribe("gateway-authz", ["token.revoked"], handler("gateway-authz"), broadcast=True)

    await secrets_bus.publish(Event(type="secret.created", tenant_id="ten_1", data={"path": "a"}))
    await gateway.publish(Event(type="token.revoked", tenant_id="ten_1", data={"jti": "tok_1"}))
    with pytest.raises(Exception, match="not published"):  # the broker's topic permissions
        await secrets_bus.publish(Event(type="token.revoked", tenant_id="ten_1", data={"jti": "tok_2"}))

    # the same forgery, put straight into the consumers' queues through the default exchange
    conn, channel = await raw(users, "secrets")
    bcast = next(q.split()[0] for q in rabbitmqctl("list_queues", "-p", users.admin.path.lstrip("/"), "name",
                                                   "--no-table-headers", "--quiet").splitlines()
                 if q.startswith("coffer.bcast.gateway-authz."))
    with capture_logs(processors=PROCESSORS[:1]) as logs:
        for queue in ("coffer.events.webhooks", bcast):
            forged = Event(type="token.revoked", tenant_id="ten_1", data={"identity_id": "idn_root"})
            await channel.basic_publish(encode(forged.model_dump(mode="json")), routing_key=queue,
                                        properties=Basic.Properties(user_id=users.map["secrets"], delivery_mode=2))
        deadline = asyncio.get_running_loop().time() + 5
        while len([e for e in logs if e["event"] == "event_refused"]) < 2:
            assert asyncio.get_running_loop().time() < deadline, logs
            await asyncio.sleep(0.05)
    await conn.close()
    assert delivered == {"webhooks": ["secret.created", "token.revoked"], "gateway-authz": ["token.revoked"]}
    assert {e["sender"] for e in logs if e["event"] == "event_refused"} == {users.map["secrets"]}
    assert await webhooks.dead_letter_count("webhooks") == 1  # kept for an operator to look at


async def test_a_spoofed_user_id_is_refused_by_the_broker(users: Users) -> None:
    conn, channel = await raw(users, "secrets")
    try:
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await channel.basic_publish(b"{}", exchange=EVENTS_EXCHANGE, routing_key="secret.created",
                                        properties=Basic.Properties(user_id=users.map["gateway"]))
    finally:
        await conn.close()


async def test_a_service_cannot_take_another_services_queue(users: Users) -> None:
    conn = await aio_pika.connect(users.url("secrets"))
    try:
        for queue in ("coffer.rpc.iam", "coffer.events.webhooks"):
            channel = await conn.channel()
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.declare_queue(queue, durable=True)
        channel = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):  # nor make exchanges
            await channel.declare_exchange("coffer.mine", aio_pika.ExchangeType.TOPIC)
    finally:
        await conn.close()


async def test_each_service_role_owns_its_schema_only(pg_dsn: str) -> None:
    prefix = "r" + secrets.token_hex(3) + "_"
    settings = Settings(database_url=pg_dsn, schema_prefix=prefix)
    passwords = {s: secrets.token_urlsafe(16) for s in SERVICES}
    await provision_postgres(pg_dsn, passwords, settings)
    roles = [pg_role(prefix, s) for s in SERVICES]
    try:
        gateway = await asyncpg.connect(str(URL(pg_dsn).with_user(roles[0]).with_password(passwords["gateway"])))
        await gateway.execute(f'CREATE TABLE "{prefix}gateway".identities_probe (secret text)')
        await gateway.close()
        other = await asyncpg.connect(str(URL(pg_dsn).with_user(roles[1]).with_password(passwords["secrets"])))
        try:
            for sql in (f'SELECT * FROM "{prefix}gateway".identities_probe', f'CREATE SCHEMA "{prefix}mine"',
                        f'CREATE TABLE "{prefix}gateway".planted (a int)', "CREATE TABLE public.planted (a int)"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await other.execute(sql)
            await other.execute(f'CREATE TABLE "{prefix}secrets".mine (a int)')  # its own schema: fine
        finally:
            await other.close()
    finally:
        admin = await asyncpg.connect(pg_dsn)
        for service, role in zip(SERVICES, roles, strict=True):
            await admin.execute(f'DROP SCHEMA IF EXISTS "{settings.schema_for(service)}" CASCADE')
            await admin.execute(f'DROP OWNED BY "{role}"')
            await admin.execute(f'DROP ROLE "{role}"')
        await admin.close()
