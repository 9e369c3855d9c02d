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
from shared.bus.base import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, RPC_EXCHANGE, decode, encode
from shared.bus.rabbit.batch import BATCH_METHOD, BATCH_TYPE, Call, decode_replies, encode_batch
from shared.config import Settings
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.errors import Forbidden, ServiceUnavailable
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

    # the dispatcher's credentials may publish RPC, but only iam.may: the broker refuses the request (the
    # channel closes, the bus reconnects) and the secrets service never sees it, alone or in a batch
    with pytest.raises(ServiceUnavailable):
        await webhooks.call("secrets", "get", {}, RequestContext(request_id="req_forged"))
    outcomes = await asyncio.gather(*(webhooks.call("secrets", "get", {}, RequestContext(request_id=f"req_b{i}"))
                                      for i in range(10)), return_exceptions=True)
    assert all(isinstance(o, ServiceUnavailable) for o in outcomes) and seen == ["req_gateway"]


async def test_each_call_of_a_batch_is_checked_by_the_service(users: Users) -> None:
    """A caller may publish a batch to a service it calls; inside it, each call is checked against its method's
    callers: the dispatcher's ``iam.may`` is answered, an ``iam.token`` beside it refused."""
    ran: list[str] = []

    async def handler(name: str) -> Any:
        async def run(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
            ran.append(name)
            return {"done": name}
        return run

    gateway = await users.bus("gateway")
    await gateway.serve("iam", {"may": await handler("may"), "token": await handler("token")},
                        callers={"may": ("gateway", "webhooks")})
    conn, channel = await raw(users, "webhooks")
    try:
        replies: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_reply(message: Any) -> None:
            assert message.header.properties.message_type == BATCH_TYPE
            await replies.put(message.body)

        await channel.basic_consume("amq.rabbitmq.reply-to", on_reply, no_ack=True)
        headers = RequestContext(request_id="req_batch").to_headers()
        calls = [Call("c-may", "may", b"{}", headers, 5000), Call("c-token", "token", b"{}", headers, 5000)]
        with capture_logs(processors=PROCESSORS[:1]) as logs:
            await channel.basic_publish(encode_batch(calls), exchange=RPC_EXCHANGE, routing_key=f"iam.{BATCH_METHOD}",
                                        properties=Basic.Properties(reply_to="amq.rabbitmq.reply-to",
                                                                    user_id=users.map["webhooks"]))
            answers: dict[str, Any] = {}
            while len(answers) < 2:
                answers.update((cid, decode(body)) for cid, body in decode_replies(await asyncio.wait_for(
                    replies.get(), 5)))
        assert answers["c-may"] == {"ok": True, "result": {"done": "may"}}
        assert answers["c-token"]["ok"] is False and answers["c-token"]["error"]["code"] == "forbidden"
        assert ran == ["may"]
        refused = [e for e in logs if e["event"] == "rpc_refused"]
        assert [(e["sender"], e["method"]) for e in refused] == [(users.map["webhooks"], "token")]
    finally:
        await conn.close()


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
    """The secrets user sees another service's request and answers first: ignored.

    It can't bind its queue to another service's method any more (the test below): here the operator's binding
    stands for any way a request might reach it, so that the reply check is shown to hold on its own.
    """
    async def may(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        await asyncio.sleep(0.3)  # the forger is faster
        return {"allowed": [False]}

    gateway = await users.bus("gateway")
    await gateway.serve("iam", {"may": may}, callers={"may": ("gateway", "webhooks")})
    webhooks = await users.bus("webhooks")
    conn = await aio_pika.connect(users.url("secrets"))
    admin = await aio_pika.connect(str(users.admin))
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue("coffer.rpc.secrets", durable=True)
        rpc = await (await admin.channel()).declare_exchange(RPC_EXCHANGE, passive=True)
        admin_queue = await (await admin.channel()).declare_queue("coffer.rpc.secrets", passive=True)
        await admin_queue.bind(rpc, "iam.may")
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
        await admin_queue.unbind(rpc, "iam.may")
    finally:
        await conn.close()
        await admin.close()


#: requests the gateway makes (values included), and wildcards that would take every one of them
OTHERS_CALLS = ("secrets.put", f"secrets.{BATCH_METHOD}", "secrets.backend_create", "iam.token", "iam.may",
                "lease.engine_create", f"lease.{BATCH_METHOD}", "#", "*.put", "secrets.#", "*.*")


async def test_a_service_cannot_bind_to_another_services_calls(users: Users) -> None:
    """Issue #27: the pki user bound queues it may make to the gateway's requests and read their copies."""
    put_seen: list[dict[str, Any]] = []

    async def put(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        put_seen.append(payload)
        return {"version": 1}

    secrets_bus, gateway = await users.bus("secrets"), await users.bus("gateway")
    await secrets_bus.serve("secrets", {"put": put})
    conn = await aio_pika.connect(users.url("pki"))
    try:
        spies = []
        for name in ("coffer.rpc.pki", "coffer.events.pki-spy", "coffer.dead.pki-spy"):  # names it may make
            channel = await conn.channel()
            spies.append(await channel.declare_queue(name, durable=True, auto_delete=name != "coffer.rpc.pki"))
        for spy in spies:
            for key in OTHERS_CALLS:
                channel = await conn.channel()  # a refusal closes the channel
                rpc = await channel.declare_exchange(RPC_EXCHANGE, passive=True)
                queue = await channel.declare_queue(spy.name, passive=True)
                with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                    await queue.bind(rpc, key)
        # nor through an exchange it may publish to, bound to the RPC exchange
        raw_channel = await (await conn.channel()).get_underlay_channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await raw_channel.exchange_bind(destination=EVENTS_EXCHANGE, source=RPC_EXCHANGE, routing_key="secrets.put")

        value = {"path": "db/password", "value": "s3cret-value"}
        assert await gateway.call("secrets", "put", value, RequestContext()) == {"version": 1}
        assert put_seen == [value]  # the addressee has it ...
        channel = await conn.channel()
        for spy in spies:  # ... and no queue of the pki user does
            assert (await channel.declare_queue(spy.name, passive=True)).declaration_result.message_count == 0
            await channel.queue_delete(spy.name)
    finally:
        await conn.close()


async def test_a_service_cannot_bind_to_another_consumers_dead_letters(users: Users) -> None:
    """Dead letters are routed by consumer name: the pki user may bind and read only its own consumers'."""
    conn = await aio_pika.connect(users.url("pki"))
    try:
        channel = await conn.channel()
        await channel.declare_queue("coffer.dead.pki-spy", durable=True, auto_delete=True)
        for key in ("webhooks", "secrets-tenants", "gateway-tenants", "lease-tenants", "#", "*"):
            channel = await conn.channel()
            dlx = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, passive=True)
            spy = await channel.declare_queue("coffer.dead.pki-spy", passive=True)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await spy.bind(dlx, key)
        raw_channel = await (await conn.channel()).get_underlay_channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):  # nor put anything into another's dead letters
            await raw_channel.basic_publish(b"{}", exchange=DEAD_LETTER_EXCHANGE, routing_key="webhooks",
                                            properties=Basic.Properties(user_id=users.map["pki"]))
    finally:
        await conn.close()

    # its own consumer's dead letters still reach its own dead-letter queue
    async def refuse(event: Event, ctx: RequestContext) -> None:
        raise Forbidden("not retryable: dead-lettered at once")

    pki, gateway = await users.bus("pki"), await users.bus("gateway")
    await pki.subscribe("pki-tenants", ["tenant.deleted"], refuse)
    await gateway.publish(Event(type="tenant.deleted", tenant_id="ten_1", data={}))
    deadline = asyncio.get_running_loop().time() + 5
    while await pki.dead_letter_count("pki-tenants") < 1:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


async def test_a_service_serves_its_own_calls_end_to_end(users: Users) -> None:
    """What the broker now refuses leaves the legitimate paths alone: the pki user binds and serves its own
    requests, alone and in batches, and the dispatcher still asks ``iam.may``."""
    async def sign(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {"signed": payload["n"]}

    async def may(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return {"allowed": [True]}

    pki, gateway, webhooks = await users.bus("pki"), await users.bus("gateway"), await users.bus("webhooks")
    await pki.serve("pki", {"sign": sign})
    await gateway.serve("iam", {"may": may}, callers={"may": ("gateway", "webhooks")})
    assert await gateway.call("pki", "sign", {"n": 0}, RequestContext()) == {"signed": 0}
    answers = await asyncio.gather(*(gateway.call("pki", "sign", {"n": i}, RequestContext()) for i in range(20)))
    assert answers == [{"signed": i} for i in range(20)]
    answers = await asyncio.gather(*(webhooks.call("iam", "may", {"checks": []}, RequestContext()) for _ in range(5)))
    assert answers == [{"allowed": [True]}] * 5
    assert pki.reconnects == gateway.reconnects == webhooks.reconnects == 0  # nothing was refused on the way


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


async def test_an_event_dead_lettered_into_the_exchange_under_another_key_is_refused(users: Users) -> None:
    """The attack review after issue #27: pki made a queue of its own whose dead letters go to coffer.events
    under the key ``tenant.deleted`` (RabbitMQ checks no topic permission on dead-lettering), and put into it
    a ``certificate.issued`` of its own naming a victim tenant: every tenant.deleted consumer ran it, and the
    victim's secrets were destroyed. Now the routing key must be the event's type and the message never
    dead-lettered, and a consumer sees only the types it subscribed to."""
    ran: list[tuple[str, str]] = []

    def handler(consumer: str) -> Any:
        async def on(event: Event, ctx: RequestContext) -> None:
            ran.append((consumer, event.type))
        return on

    for service in ("secrets", "lease"):
        await (await users.bus(service)).subscribe(f"{service}-tenants", ["tenant.deleted"], handler(service))
    await (await users.bus("webhooks")).subscribe("webhooks", ["#"], handler("webhooks"))
    pki, gateway = await users.bus("pki"), await users.bus("gateway")

    conn = await aio_pika.connect(users.url("pki"))
    try:
        channel = await conn.channel()
        relay = await channel.declare_queue("coffer.events.pki-relay", durable=False, arguments={
            "x-dead-letter-exchange": EVENTS_EXCHANGE, "x-dead-letter-routing-key": "tenant.deleted",
            "x-message-ttl": 0})
        forged = Event(type="certificate.issued", tenant_id="ten_victim", data={"tenant_id": "ten_victim"})
        with capture_logs(processors=PROCESSORS[:1]) as logs:
            await channel.default_exchange.publish(
                aio_pika.Message(encode(forged.model_dump(mode="json")), user_id=users.map["pki"]),
                routing_key=relay.name)
            deadline = asyncio.get_running_loop().time() + 5
            while len([e for e in logs if e["event"] == "event_refused"]) < 3:
                assert asyncio.get_running_loop().time() < deadline, logs
                await asyncio.sleep(0.05)
        await relay.delete()
    finally:
        await conn.close()
    assert ran == [], ran
    refused = [e for e in logs if e["event"] == "event_refused"]
    assert {e["consumer"] for e in refused} == {"secrets-tenants", "lease-tenants", "webhooks"}
    assert {e["routing_key"] for e in refused} == {"tenant.deleted"}
    # a genuine tenant.deleted of the gateway's still reaches them all, and pki's own event the dispatcher
    await gateway.publish(Event(type="tenant.deleted", tenant_id="ten_1", data={"tenant_id": "ten_1"}))
    await pki.publish(Event(type="certificate.issued", tenant_id="ten_1", data={}))
    deadline = asyncio.get_running_loop().time() + 5
    while len(ran) < 4:
        assert asyncio.get_running_loop().time() < deadline, ran
        await asyncio.sleep(0.05)
    assert sorted(ran) == [("lease", "tenant.deleted"), ("secrets", "tenant.deleted"),
                           ("webhooks", "certificate.issued"), ("webhooks", "tenant.deleted")]


async def test_a_service_is_handed_its_own_key_share_and_no_other(users: Users, tmp_path: Any) -> None:
    """shamir in distributed mode (shared/handover.py): each service's user may ask the gateway for its own share
    of the root keyring only (the broker refuses the publish of another's), sealed to the asker's key."""
    from shared import handover
    from shared.crypto import LocalKms
    from shared.handover import HandedOver

    root = LocalKms.load(tmp_path / "kms.key", create=True)
    gateway = await users.bus("gateway")
    await gateway.serve("iam", handover.handlers(lambda: root), callers=handover.callers())
    pki = await users.bus("pki")
    share = await asyncio.wait_for(HandedOver(pki, "pki", tmp_path / "kms.key", timeout=2.0).share("pki"), 10)
    assert share == handover.root_share(root, "pki")
    # nor does a process ask for a share that is not its service's, through this class
    with pytest.raises(Exception, match="own service"):
        await HandedOver(pki, "pki", tmp_path / "kms.key").share("secrets")
    # the answer is sealed to the asker's public key: another key can't open it
    import base64

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    asker, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    reply = await pki.call("iam", handover.method_of("pki"), {
        "public_key": base64.b64encode(asker.public_key().public_bytes_raw()).decode()}, RequestContext())
    sealed = base64.b64decode(reply["sealed"])
    assert handover.root_share(root, "pki") not in sealed
    with pytest.raises(Exception):  # noqa: B017 - cryptography's HPKE raises its own decryption error
        handover.SUITE.decrypt(sealed, other, info=b"coffer-keyring-handover|v1|pki")
    assert b"share" in handover.SUITE.decrypt(sealed, asker, info=b"coffer-keyring-handover|v1|pki")
    # last (the refusal closes pki's connection): pki asks for the secrets service's share, and the broker
    # refuses the publish (its topic permissions)
    with pytest.raises(ServiceUnavailable):
        await pki.call("iam", handover.method_of("secrets"), {"public_key": "A" * 44}, RequestContext())
