"""Provisioned event consumers (api.md §12): a RabbitMQ user that may read one quorum queue of its own, bound
to the event types it was given, and nothing else.

    python -m services.provision --consumer billing --events 'secret.*,lease.*'   # prints its URL
    python -m services.provision --remove-consumer billing

With the operator's (administrator's) ``COFFER_AMQP_URL``. The operator's side makes everything: the queue
``coffer.consumer.<name>`` (quorum, durable, its dead letters to ``coffer.consumer.<name>.dead`` after
``DELIVERY_LIMIT`` deliveries), its bindings on ``coffer.events`` (one per pattern; patterns no longer given
are unbound), and the user ``coffer-consumer-<vhost digest>-<name>`` (tagged ``coffer-consumer``) with
permissions configure nothing, write nothing, read its two queues. So the consumer can take and acknowledge
its events, and RabbitMQ refuses it the rest: publishing anything (no write on any exchange, the default one
included), declaring, deleting or binding queues (no configure; binding needs write on the queue and read on
the exchange), and reading any other queue — the RPC queues, the services' event queues, other consumers'.
Provisioning a consumer again gives it a new password and the patterns given now.

A consumer gets every tenant's events of its types (it is a part of the installation, as the services are):
metadata only, never a secret value. Its name and the vhost make the user's name (users are global to the
broker); the password is printed once, in the URL, and never stored: RabbitMQ gets a salted hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import subprocess
from collections.abc import Callable, Sequence

import aio_pika
import aiormq
from yarl import URL

from services.provision.installation import rabbitmq_users, vhost_of
from services.provision.rabbitmq import import_definitions, logs_in, rabbit_password_hash, upgrade_exchanges
from shared.bus.base import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE
from shared.contracts.webhooks import EVENT_PATTERN

TAG = "coffer-consumer"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
DELIVERY_LIMIT = 20
MAX_PATTERNS = 20


def queue_of(name: str) -> str:
    return f"coffer.consumer.{name}"


def dead_queue_of(name: str) -> str:
    return f"coffer.consumer.{name}.dead"


def user_of(vhost: str, name: str) -> str:
    """The consumer's RabbitMQ user: its name and the vhost's (users are global to the broker)."""
    return f"coffer-consumer-{hashlib.sha256(vhost.encode()).hexdigest()[:6]}-{name}"


def permissions(name: str) -> dict[str, str]:
    """configure nothing, write nothing, read its queue and its dead letters."""
    return {"configure": "^$", "write": "^$",
            "read": f"^(?:{re.escape(queue_of(name))}|{re.escape(dead_queue_of(name))})$"}


def check_request(name: str, patterns: Sequence[str]) -> list[str]:
    """The patterns, checked (``SystemExit`` naming what is wrong)."""
    if not NAME.fullmatch(name):
        raise SystemExit("provision: a consumer's name is 1-40 of a-z, 0-9 and '-', starting with a letter")
    cleaned = [p.strip() for p in patterns if p.strip()]
    if not cleaned or len(cleaned) > MAX_PATTERNS or not all(re.fullmatch(EVENT_PATTERN, p) for p in cleaned):
        raise SystemExit(f"provision: --events is 1-{MAX_PATTERNS} comma-separated event type patterns "
                         "('secret.*', 'lease.expired', '#')")
    return sorted(set(cleaned))


async def _owned(user: str) -> bool:
    """``True`` if ``user`` is a consumer provisioning made; ``SystemExit`` if a user of that name is not."""
    tags = (await rabbitmq_users()).get(user)
    if tags is not None and TAG not in tags:
        raise SystemExit(f"provision: refused: RabbitMQ user {user} exists and is not a provisioned consumer")
    return tags is not None


async def _import_user(admin_url: URL, user: str, password: str, name: str) -> None:
    """The user and its permissions, through ``import_definitions`` on stdin (the password never on a command
    line; RabbitMQ gets a salted hash); then wait until it logs in (the import is asynchronous)."""
    vhost = vhost_of(admin_url)
    doc = {"users": [{"name": user, "password_hash": rabbit_password_hash(password),
                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [TAG]}],
           "permissions": [{"user": user, "vhost": vhost, **permissions(name)}]}
    await import_definitions(doc)
    await logs_in(admin_url.with_user(user).with_password(password), user)


async def _queues(admin_url: URL, name: str, patterns: list[str], bound: list[str]) -> None:
    """The consumer's queue, its dead letters and its bindings, as the operator (``bound`` before: those no
    longer wanted removed)."""
    conn = await aio_pika.connect(str(admin_url), timeout=10)
    try:
        channel = await conn.channel()
        events = await channel.declare_exchange(EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        dlx = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        dead = await channel.declare_queue(dead_queue_of(name), durable=True, arguments={"x-queue-type": "quorum"})
        await dead.bind(dlx, f"consumer.{name}")
        queue = await channel.declare_queue(queue_of(name), durable=True, arguments={
            "x-queue-type": "quorum", "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": f"consumer.{name}", "x-delivery-limit": DELIVERY_LIMIT})
        for pattern in patterns:
            await queue.bind(events, pattern)
        for old in bound:
            if old not in patterns:
                await queue.unbind(events, old)
    finally:
        await conn.close()


async def _bindings(vhost: str, name: str) -> list[str]:
    """The routing keys ``coffer.consumer.<name>`` is bound to on ``coffer.events`` now."""
    done = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "list_bindings", "-p", vhost, "source_name", "destination_name", "routing_key",
        "--formatter", "json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await done.communicate()
    try:
        if done.returncode != 0:
            raise ValueError(err.decode(errors="replace").strip()[:300])
        rows = json.loads(out or b"[]")
    except ValueError as exc:  # bindings unknown: re-provisioning must not leave old ones while saying it's done
        raise SystemExit(f"provision: rabbitmqctl list_bindings failed: {exc}") from None
    return [r["routing_key"] for r in rows
            if r.get("source_name") == EVENTS_EXCHANGE and r.get("destination_name") == queue_of(name)]


async def add_consumer(admin_url: URL, name: str, patterns: Sequence[str],
                       say: Callable[[str], None] = print) -> URL:
    """Make (or remake) consumer ``name`` bound to ``patterns``; its URL (with its new password)."""
    keys = check_request(name, patterns)
    user = user_of(vhost_of(admin_url), name)
    again, bound = await asyncio.gather(_owned(user), _bindings(vhost_of(admin_url), name))
    await upgrade_exchanges(admin_url)
    await _queues(admin_url, name, keys, bound)
    password = secrets.token_urlsafe(24)
    await _import_user(admin_url, user, password, name)
    say(f"coffer: consumer {name} {'updated' if again else 'made'}: user {user}, queue {queue_of(name)} bound to "
        f"{', '.join(keys)} on {EVENTS_EXCHANGE} (dead letters after {DELIVERY_LIMIT} deliveries: "
        f"{dead_queue_of(name)}); it may read those two queues and nothing else")
    return admin_url.with_user(user).with_password(password)


async def remove_consumer(admin_url: URL, name: str, say: Callable[[str], None] = print) -> None:
    """Remove consumer ``name``: its user (its connections close), its queue and its dead letters."""
    check_request(name, ["#"])
    user = user_of(vhost_of(admin_url), name)
    if await _owned(user):
        done = await asyncio.create_subprocess_exec("rabbitmqctl", "delete_user", user, stdout=subprocess.DEVNULL,
                                                    stderr=subprocess.PIPE)
        _, err = await done.communicate()
        if done.returncode != 0:
            raise SystemExit(f"provision: rabbitmqctl delete_user failed: {err.decode().strip()[:300]}")
    conn = await aio_pika.connect(str(admin_url), timeout=10)
    try:
        for queue in (queue_of(name), dead_queue_of(name)):
            channel = await conn.channel()
            try:
                await channel.queue_delete(queue)
            except aiormq.exceptions.ChannelNotFoundEntity:
                pass
    finally:
        await conn.close()
    say(f"coffer: consumer {name} removed (user {user}, queues {queue_of(name)} and {dead_queue_of(name)})")
