"""The broker side: each service's RabbitMQ permissions and topic permissions, the definitions that carry them,
and provisioning the users (after bringing an earlier version's exchanges to today's)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import subprocess
from typing import Any

import aio_pika
import aiormq
from yarl import URL

from services.provision.installation import (
    amqp_user,
    installation_id,
    installation_mark,
    rabbitmq_conflicts,
    rabbitmq_users,
    refusal,
    vhost_of,
)
from shared.bus.base import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, RPC_EXCHANGE
from shared.bus.rabbit.batch import BATCH_METHOD
from shared.handover import method_of as handover_method
from shared.registry import EVENT_OWNERS, SERVICES, rpc_name

#: what each service may call: rpc name -> its methods (empty: every method). The gateway calls every
#: service; the webhook dispatcher asks ``iam.may`` (the gateway's ``rpc_callers``); every service asks
#: ``iam.keyring_<itself>``. The broker refuses any
#: other request at publish; each service checks the sender of every request it runs again.
CALLS: dict[str, dict[str, tuple[str, ...]]] = {
    "gateway": {rpc_name(s): () for s in SERVICES},
    # each other service asks the gateway for its own share of the root keyring, and for nobody else's
    # (a shamir seal in distributed mode: shared/handover.py)
    **{s: {rpc_name("gateway"): (*(("may",) if s == "webhooks" else ()), handover_method(s))}
       for s in SERVICES if s != "gateway"},
}
#: services that call other services' RPC
CALLERS = tuple(CALLS)
#: event types each service binds its queues to, as topic patterns (beyond tenant.deleted, which all may): the
#: gateway stores every event for its streams (api.md §12), the webhook dispatcher fans every one out
CONSUMES = {"gateway": r".*", "webhooks": r".*"}
#: the direct RPC exchange of earlier versions, which every service could bind to: removed on provisioning
LEGACY_RPC_EXCHANGE = "coffer.rpc"


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
    await import_definitions(definitions(vhost, passwords, prefix, installation_mark(installation)))
    for service, password in passwords.items():  # the import is asynchronous: wait until each user logs in
        await logs_in(admin_url.with_user(amqp_user(prefix, service)).with_password(password), f"for {service}")


async def import_definitions(doc: dict[str, Any]) -> None:
    """``rabbitmqctl import_definitions`` of ``doc``, on standard input, so nothing is written to disk and no
    password hash is on a command line (the CLI passes it to the node)."""
    done = await asyncio.create_subprocess_exec("rabbitmqctl", "import_definitions", stdin=subprocess.PIPE,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await done.communicate(json.dumps(doc).encode())
    if done.returncode != 0:
        raise SystemExit(f"provision: rabbitmqctl import_definitions failed: {err.decode().strip()[:300]}")


async def logs_in(url: URL, who: str) -> None:
    """Wait until ``url``'s user logs in (an import is asynchronous); ``SystemExit`` after ten seconds."""
    for _ in range(100):
        try:
            conn = await aio_pika.connect(str(url), timeout=5)
            await conn.close()
            return
        except Exception:  # noqa: BLE001 - not imported yet
            await asyncio.sleep(0.1)
    raise SystemExit(f"provision: RabbitMQ user {who} does not log in")
