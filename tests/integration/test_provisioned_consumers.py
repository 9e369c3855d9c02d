"""Provisioned event consumers (issue #31): ``python -m services.provision --consumer NAME --events PATTERNS``
against the real broker, in a vhost of the test's own (never the platform's).

The consumer gets the event types it was given, published as the services publish them (``RabbitBus``), and
nothing else; RabbitMQ refuses it everything else: publishing (to the event exchange, to an RPC queue through
the default exchange), making or binding queues (its own to more types, or to the RPC exchange), reading
another queue (a service's RPC queue, another consumer's), deleting its own queue. Provisioned again it gets the
new patterns and a new password; removed, its user and queues are gone.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
import pytest
from yarl import URL

from services.provision.consumers import add_consumer, dead_queue_of, queue_of, remove_consumer, user_of
from services.provision.installation import vhost_of
from shared.bus import RabbitBus
from shared.bus.base import EVENTS_EXCHANGE, RPC_EXCHANGE
from shared.contracts.events import Event
from tests.conftest import ROOT

pytestmark = [pytest.mark.rabbitmq]
REFUSED = (aiormq.exceptions.ChannelAccessRefused, aio_pika.exceptions.ChannelClosed)


async def _refused(url: URL, attempt: Callable[[aio_pika.abc.AbstractChannel], Awaitable[Any]]) -> None:
    """``attempt`` on a fresh channel of the consumer's own connection is refused by the broker."""
    conn = await aio_pika.connect(str(url), timeout=5)
    try:
        channel = await conn.channel(publisher_confirms=True)
        with pytest.raises(REFUSED):
            await asyncio.wait_for(attempt(channel), 5)
    finally:
        await conn.close()


async def _drain(url: URL, queue_name: str, wanted: int) -> list[str]:
    """The types of the messages on the consumer's queue (waiting for ``wanted`` of them), acknowledged."""
    got: list[str] = []
    conn = await aio_pika.connect(str(url), timeout=5)
    try:
        channel = await conn.channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        for _ in range(50):
            message = await queue.get(fail=False)
            if message is None:
                if len(got) >= wanted:
                    break
                await asyncio.sleep(0.1)
                continue
            got.append(str(message.type))
            await message.ack()
    finally:
        await conn.close()
    return got


async def test_a_consumer_reads_its_types_only_and_may_do_nothing_else(private_amqp: str) -> None:
    admin = URL(private_amqp)
    said: list[str] = []
    url = await add_consumer(admin, "billing", ["secret.*", "lease.expired"], said.append)
    assert url.user == user_of(vhost_of(admin), "billing") and url.password and url.password not in " ".join(said)
    # the services' own bus publishes (it declares the RPC queue a service has, as the secrets service does)
    bus = RabbitBus(private_amqp, name="consumer-test")
    await bus.start()
    try:
        await bus.serve("secrets", {"get": lambda payload, ctx: asyncio.sleep(0)})  # type: ignore[arg-type,return-value]
        for kind in ("secret.created", "secret.updated", "policy.updated", "lease.created", "lease.expired"):
            await bus.publish(Event(type=kind, tenant_id="ten_1", data={"path": "a"}))
        assert sorted(await _drain(url, queue_of("billing"), 3)) == ["lease.expired", "secret.created",
                                                                      "secret.updated"]
        async with await aio_pika.connect(private_amqp) as conn:  # another consumer's queue (as the operator
            await (await conn.channel()).declare_queue(queue_of("audit-copy"), durable=True)  # makes it)

        async def publish_event(ch: Any) -> None:
            exchange = await ch.get_exchange(EVENTS_EXCHANGE, ensure=False)
            await exchange.publish(aio_pika.Message(b"{}", type="secret.created"), routing_key="secret.created")

        async def publish_rpc(ch: Any) -> None:  # straight into a service's RPC queue, by name
            await ch.default_exchange.publish(aio_pika.Message(b"{}"), routing_key="coffer.rpc.secrets")

        async def declare(ch: Any) -> None:
            await ch.declare_queue("coffer.consumer.billing.more", durable=True)

        async def bind_more(ch: Any) -> None:
            queue = await ch.get_queue(queue_of("billing"), ensure=False)
            await queue.bind(EVENTS_EXCHANGE, "policy.*")

        async def bind_rpc(ch: Any) -> None:
            queue = await ch.get_queue(queue_of("billing"), ensure=False)
            await queue.bind(RPC_EXCHANGE, "secrets.#")

        async def read(name: str) -> Callable[[Any], Awaitable[Any]]:
            async def attempt(ch: Any) -> None:
                await (await ch.get_queue(name, ensure=False)).get(fail=False)
            return attempt

        async def delete_own(ch: Any) -> None:
            await ch.queue_delete(queue_of("billing"))

        for attempt in (publish_event, publish_rpc, declare, bind_more, bind_rpc, await read("coffer.rpc.secrets"),
                        await read(queue_of("audit-copy")), await read("coffer.events.gateway-events"), delete_own):
            await _refused(url, attempt)
        await bus.publish(Event(type="policy.created", tenant_id="ten_1", data={"id": "p"}))
        assert await _drain(url, queue_of("billing"), 0) == []  # no binding was added
        assert await _drain(url, dead_queue_of("billing"), 0) == []  # its dead letters: readable, empty
    finally:
        await bus.close()

    # again: the new patterns only (the old binding removed) and a new password (the old one fails)
    again = await add_consumer(admin, "billing", ["lease.*"], said.append)
    assert again.password != url.password
    with pytest.raises(Exception):  # noqa: B017, PT011 - the broker refuses the login, however aio-pika says it
        await aio_pika.connect(str(url), timeout=5)
    bus = RabbitBus(private_amqp, name="consumer-test-2")
    await bus.start()
    try:
        for kind in ("secret.updated", "lease.renewed"):
            await bus.publish(Event(type=kind, tenant_id="ten_1", data={}))
        assert await _drain(again, queue_of("billing"), 1) == ["lease.renewed"]
    finally:
        await bus.close()

    # removed: the user can't log in, its queues are gone
    await remove_consumer(admin, "billing", said.append)
    with pytest.raises(Exception):  # noqa: B017, PT011
        await aio_pika.connect(str(again), timeout=5)
    conn = await aio_pika.connect(private_amqp)
    try:
        for queue in (queue_of("billing"), dead_queue_of("billing")):
            with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
                await (await conn.channel()).declare_queue(queue, passive=True)
    finally:
        await conn.close()


def test_the_command_prints_the_url_alone_on_stdout_and_checks_its_input(private_amqp: str) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}, "PYTHONPATH": str(ROOT),
           "COFFER_AMQP_URL": private_amqp}
    command = [sys.executable, "-m", "services.provision"]
    made = subprocess.run([*command, "--consumer", "cli-made", "--events", "secret.*, lease.*"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    url = URL(made.stdout.strip())
    assert url.scheme == "amqp" and url.user == user_of(vhost_of(URL(private_amqp)), "cli-made") and url.password
    assert url.password not in made.stderr and "lease.*, secret.*" in made.stderr
    readme_consumer_reads(private_amqp, url, "cli-made")
    for bad in (["--consumer", "Bad Name", "--events", "secret.*"], ["--consumer", "x", "--events", "secret.{a}"],
                ["--consumer", "x"]):
        refused = subprocess.run([*command, *bad], env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and refused.stdout == "", bad
    removed = subprocess.run([*command, "--remove-consumer", "cli-made"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert removed.returncode == 0 and "removed" in removed.stderr


def readme_consumer_reads(admin: str, url: URL, name: str) -> None:
    """README's Python consumer ("React to changes"), run as written with the consumer's URL, prints the event
    published (as the services publish) on its queue."""
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## React to changes\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, "README.md has no '## React to changes'"
    code = re.search(r"^```python\n(.*?)^```$", section.group(1), flags=re.S | re.M)
    assert code and "aio_pika" in code.group(1)

    async def publish() -> None:
        bus = RabbitBus(admin, name="readme-consumer")
        await bus.start()
        try:
            await bus.publish(Event(type="secret.updated", tenant_id="ten_readme",
                                    data={"path": "app/prod/db", "version": 2, "secret_type": "generic"}))
        finally:
            await bus.close()

    asyncio.run(publish())
    env = {**os.environ, "COFFER_CONSUMER_URL": str(url), "COFFER_CONSUMER_QUEUE": queue_of(name)}
    proc = subprocess.Popen([sys.executable, "-c", code.group(1)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stop = threading.Timer(20, proc.kill)  # a consumer that prints nothing must not hang the run
    stop.start()
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
    finally:
        stop.cancel()
        proc.kill()
        proc.wait(10)
    assert line.startswith("secret.updated ten_readme {'path': 'app/prod/db'"), (line, proc.stderr.read())
