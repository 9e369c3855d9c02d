"""The RabbitMQ bus's connection: a reconnect supervisor, the topology declared anew on every
connection, and the trust checks on RabbitMQ's validated ``user_id`` (see ``shared.bus.rabbit``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
)
from aiormq.abc import DeliveredMessage
from yarl import URL

from shared.bus.base import (
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    RPC_EXCHANGE,
    Bus,
    EventHandler,
    RpcHandler,
)
from shared.errors import ServiceUnavailable
from shared.metrics import BUS_RECONNECTS
from shared.registry import owner_of

log = structlog.get_logger("coffer.bus.rabbit")

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
#: who may call a method that ``serve`` names no callers for
DEFAULT_CALLERS: tuple[str, ...] = ("gateway",)
JSON = "application/json"


class RabbitConnection(Bus):
    """What the RPC and event parts of ``RabbitBus`` share: the connection, its channels, who is who."""

    def __init__(
        self,
        url: str,
        *,
        name: str = "coffer",
        rpc_timeout: float = 5.0,
        publish_timeout: float = 5.0,
        connect_timeout: float = 30.0,
        prefetch: int = 64,
        delivery_limit: int = 20,
        retry_delay: float = 0.2,
        heartbeat: int = 10,
        users: Mapping[str, str] | None = None,
        batch_max: int = 64,
        batch_window: float = 0.001,
        batch_bytes: int = 128 * 1024,
    ) -> None:
        super().__init__(rpc_timeout=rpc_timeout)
        self._url = url
        self.name = name
        #: this connection's RabbitMQ user: the user_id of everything it publishes
        self.user = URL(url).user or "guest"
        #: service -> its RabbitMQ user (empty: every service is ``self.user``)
        self.users = dict(users or {})
        self._passive = bool(self.users)  # per-service users: the operator declares the exchanges
        self._callers: dict[str, Mapping[str, Sequence[str]]] = {}
        self._repliers: dict[str, str | None] = {}  # correlation id -> the user the reply must come from
        self.publish_timeout = publish_timeout
        self.connect_timeout = connect_timeout
        self.prefetch = prefetch
        self.delivery_limit = delivery_limit
        self.retry_delay = retry_delay
        self.heartbeat = heartbeat
        #: RPC coalescing (``shared.bus.rabbit.batch``): calls per message at most (1: none), the longest
        #: wait for more under load, and a batch's size before it leaves anyway
        self.batch_max = batch_max
        self.batch_window = batch_window
        self.batch_bytes = batch_bytes
        self._coalescers: dict[str, Any] = {}
        self.reconnects = 0
        self._services: dict[str, dict[str, RpcHandler]] = {}
        self._consumers: dict[str, tuple[tuple[str, ...], EventHandler, bool]] = {}
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._connected = asyncio.Event()
        self._declare_lock = asyncio.Lock()
        self._conn: AbstractConnection | None = None
        self._rpc_channel: aiormq.abc.AbstractChannel | None = None
        self._rpc_slots: dict[str, asyncio.Semaphore] = {}  # per served service, like a channel's prefetch
        self._events_exchange: AbstractExchange | None = None
        self._consuming: set[str] = set()
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        self._supervisor = asyncio.create_task(self._supervise(), name=f"{self.name}-amqp")
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._connected.wait()
        except TimeoutError:
            raise ServiceUnavailable("RabbitMQ is not reachable") from None

    async def close(self) -> None:
        self._closing = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._supervisor
        self._connected.clear()
        self._fail_pending("the bus is closed")
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _supervise(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                conn = await aio_pika.connect(
                    self._url,
                    timeout=10,
                    heartbeat=self.heartbeat,
                    client_properties={"connection_name": self.name},
                )
            except Exception as exc:  # noqa: BLE001 - any failure: wait and retry
                log.warning("amqp_connect_failed", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
                continue
            lost = asyncio.Event()
            conn.close_callbacks.add(lambda *_, ev=lost: ev.set())  # bind this connection's event
            try:
                async with self._declare_lock:
                    self._consuming = set()
                    await self._declare(conn, lost)
                    self._conn = conn
                    self._connected.set()
            except Exception as exc:  # noqa: BLE001
                log.warning("amqp_setup_failed", error=type(exc).__name__, retry_in=delay)
                with contextlib.suppress(Exception):
                    await conn.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)
                continue
            delay = 0.2
            log.info("amqp_connected", reconnects=self.reconnects)
            await lost.wait()
            self._connected.clear()
            self._fail_pending("connection to RabbitMQ lost")
            with contextlib.suppress(Exception):
                await conn.close()
            if self._closing:
                return
            self.reconnects += 1
            BUS_RECONNECTS.labels(self.name).inc()
            log.warning("amqp_connection_lost", reconnects=self.reconnects)
            await asyncio.sleep(delay)

    def _user_of(self, service: str) -> str | None:
        return self.users.get(service) if self.users else self.user

    def _may_call(self, rpc: str, method: str, sender: str | None) -> bool:
        callers = self._callers.get(rpc, {}).get(method, DEFAULT_CALLERS)
        return sender is not None and sender in {self._user_of(c) for c in callers}

    def _may_publish(self, event_type: str, sender: str | None) -> bool:
        owner = owner_of(event_type)
        expected = self.user if not self.users else (self.users.get(owner) if owner else None)
        return sender is not None and sender == expected

    async def _exchange(self, channel: AbstractChannel, name: str, kind: aio_pika.ExchangeType) -> AbstractExchange:
        return await channel.declare_exchange(name, kind, durable=True, passive=self._passive)

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(ServiceUnavailable(why))

    async def _channel(
        self, conn: AbstractConnection, lost: asyncio.Event, **kwargs: Any
    ) -> AbstractChannel:
        # A channel error (not only a dropped connection) restarts the whole
        # connection, so everything is declared again from one place.
        channel = await conn.channel(**kwargs)
        channel.close_callbacks.add(lambda *_: lost.set())
        return channel

    async def _declare(self, conn: AbstractConnection, lost: asyncio.Event) -> None:
        rpc = await self._channel(conn, lost, publisher_confirms=True, on_return_raises=True)
        await self._exchange(rpc, RPC_EXCHANGE, aio_pika.ExchangeType.TOPIC)
        self._rpc_channel = await rpc.get_underlay_channel()
        await self._rpc_channel.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)

        events = await self._channel(conn, lost, publisher_confirms=True)
        self._events_exchange = await self._exchange(events, EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC)
        await self._declare_dead_letters(conn, events)
        self._lost = lost
        for service in self._services:
            await self._declare_service(conn, service)
        for consumer in self._consumers:
            await self._declare_consumer(conn, consumer)

    async def _declare_dead_letters(self, conn: AbstractConnection, channel: AbstractChannel) -> None:
        """``coffer.dlx``, as found if it exists (declared passively from then on, whatever its type).

        The operator's is topic (``services.provision``: each user may bind only its own consumers' names).
        A broker of earlier versions has it direct, and the consumers' queues name it, so it can't be made
        anew under another type or name; both route a consumer's name (one word, no wildcard) alike.
        """
        if self._passive:
            await channel.declare_exchange(DEAD_LETTER_EXCHANGE, passive=True)
            return
        probe = await conn.channel()  # a failed passive declare closes its channel: not one whose loss restarts us
        try:
            await probe.declare_exchange(DEAD_LETTER_EXCHANGE, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            await channel.declare_exchange(DEAD_LETTER_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
        finally:
            with contextlib.suppress(Exception):
                await probe.close()

    async def _declare_service(self, conn: AbstractConnection, service: str) -> None:
        raise NotImplementedError  # the RPC part

    async def _on_reply(self, message: DeliveredMessage) -> None:
        raise NotImplementedError  # the RPC part

    async def _declare_consumer(self, conn: AbstractConnection, consumer: str) -> None:
        raise NotImplementedError  # the events part
