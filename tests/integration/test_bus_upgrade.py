"""A broker of an earlier version keeps working, and is closed like a new one (issue #27).

Earlier versions declared ``coffer.rpc`` and ``coffer.dlx`` as direct exchanges, which RabbitMQ's topic
permissions don't apply to; an exchange's type can't change in place (declaring it again with another type
is PRECONDITION_FAILED). RPC moved to ``coffer.requests``; ``coffer.dlx`` keeps its name (the consumers'
quorum queues name it in their arguments, which can't change either): ``services.provision`` makes it anew
as a topic exchange, and a shared-credentials bus uses it as it finds it. Real RabbitMQ, a vhost per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from yarl import URL

from services.provision import LEGACY_RPC_EXCHANGE, provision_rabbitmq
from shared.bus import RabbitBus
from shared.bus.base import DEAD_LETTER_EXCHANGE, RPC_EXCHANGE
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.errors import Forbidden
from tests.conftest import rabbitmqctl
from tests.integration.test_bus_auth import Users

pytestmark = [pytest.mark.rabbitmq]

DELIVERY_LIMIT = 2


def exchange_types(url: str) -> dict[str, str]:
    rows = rabbitmqctl("list_exchanges", "-p", URL(url).path.lstrip("/"), "name", "type", "--no-table-headers",
                       "--quiet").splitlines()
    return dict(row.split("\t") for row in rows if row.startswith("coffer."))


async def refuse(event: Event, ctx: RequestContext) -> None:
    raise Forbidden("not retryable: dead-lettered at once")


async def dead_letters_reach(bus: RabbitBus, consumer: str) -> None:
    deadline = asyncio.get_running_loop().time() + 5
    while await bus.dead_letter_count(consumer) < 1:
        assert asyncio.get_running_loop().time() < deadline, f"no dead letter in coffer.dead.{consumer}"
        await asyncio.sleep(0.05)


async def earlier_version(url: str) -> None:
    """What an earlier version left on the broker: its direct exchanges, the webhook dispatcher's queues, and
    bindings a service could add to another's traffic (a spy queue on a request and on dead letters)."""
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        rpc = await channel.declare_exchange(LEGACY_RPC_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        dlx = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        dead = await channel.declare_queue("coffer.dead.webhooks", durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(dlx, "webhooks")
        await channel.declare_queue("coffer.events.webhooks", durable=True, arguments={
            "x-queue-type": "quorum", "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": "webhooks", "x-delivery-limit": DELIVERY_LIMIT})
        spy = await channel.declare_queue("coffer.events.pki-spy", durable=True)
        await spy.bind(rpc, "secrets.put")
        await spy.bind(dlx, "webhooks")
    finally:
        await conn.close()


@pytest.fixture
async def upgraded(private_amqp: str) -> AsyncIterator[Users]:
    """Service users provisioned on a broker an earlier version ran on."""
    await earlier_version(private_amqp)
    users = Users(private_amqp)
    await provision_rabbitmq(users.admin, users.passwords, users.prefix)
    yield users
    for bus in users.buses:
        await bus.close()
    quiet = {"stdout": asyncio.subprocess.DEVNULL, "stderr": asyncio.subprocess.DEVNULL}
    removals = [await asyncio.create_subprocess_exec("rabbitmqctl", "delete_user", name, **quiet)  # type: ignore[arg-type]
                for name in users.map.values()]
    await asyncio.gather(*(r.wait() for r in removals))


async def test_provisioning_an_earlier_versions_broker_closes_it_too(upgraded: Users) -> None:
    url = str(upgraded.admin)
    types = exchange_types(url)
    assert types[RPC_EXCHANGE] == types[DEAD_LETTER_EXCHANGE] == "topic"
    assert LEGACY_RPC_EXCHANGE not in types  # and with it, the spy's binding to secrets.put
    rows = rabbitmqctl("list_bindings", "-p", URL(url).path.lstrip("/"), "source_name", "destination_name",
                       "--no-table-headers", "--quiet").splitlines()
    # the spy keeps only the default exchange's implicit binding (source ""): its binding to dead letters is gone
    assert [row.split("\t")[0] for row in rows if row.endswith("\tcoffer.events.pki-spy")] == [""]

    conn = await aio_pika.connect(upgraded.url("pki"))
    try:
        channel = await conn.channel()
        dlx = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, passive=True)
        spy = await channel.declare_queue("coffer.events.pki-spy", passive=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):  # the binding can't be made again either
            await spy.bind(dlx, "webhooks")
    finally:
        await conn.close()

    # the earlier version's queues serve as they are: an event the dispatcher refuses reaches its dead letters
    webhooks = RabbitBus(upgraded.url("webhooks"), name="upgrade-webhooks", users=upgraded.map,
                         delivery_limit=DELIVERY_LIMIT, retry_delay=0.01)
    secrets_bus = RabbitBus(upgraded.url("secrets"), name="upgrade-secrets", users=upgraded.map)
    upgraded.buses += [webhooks, secrets_bus]
    await webhooks.start()
    await secrets_bus.start()
    await webhooks.subscribe("webhooks", ["#"], refuse)
    await secrets_bus.publish(Event(type="secret.created", tenant_id="ten_1", data={"path": "a"}))
    await dead_letters_reach(webhooks, "webhooks")


@pytest.mark.parametrize("found", ["direct", None])
async def test_a_shared_credentials_bus_takes_the_dead_letter_exchange_it_finds(
        private_amqp: str, found: str | None) -> None:
    """One user for every service (no boundary to keep): an earlier version's direct ``coffer.dlx`` is used as
    it is, not declared again with another type (which would fail); on a new broker it is made a topic one."""
    if found:
        conn = await aio_pika.connect(private_amqp)
        await (await conn.channel()).declare_exchange(DEAD_LETTER_EXCHANGE, found, durable=True)
        await conn.close()
    bus = RabbitBus(private_amqp, name="upgrade-shared", delivery_limit=DELIVERY_LIMIT, retry_delay=0.01)
    await bus.start()
    try:
        await bus.subscribe("pki-tenants", ["tenant.deleted"], refuse)
        await bus.publish(Event(type="tenant.deleted", tenant_id="ten_1", data={}))
        await dead_letters_reach(bus, "pki-tenants")
        assert bus.reconnects == 0
    finally:
        await bus.close()
    types = exchange_types(private_amqp)
    assert types[DEAD_LETTER_EXCHANGE] == (found or "topic") and types[RPC_EXCHANGE] == "topic"
