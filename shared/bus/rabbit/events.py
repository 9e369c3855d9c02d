"""Events over RabbitMQ: the topic exchange ``coffer.events``, a quorum queue per consumer,
dead letters, and per-process broadcast queues (see ``shared.bus.rabbit``)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Sequence
from functools import partial

import aio_pika
from aio_pika.abc import (
    AbstractConnection,
    AbstractIncomingMessage,
)

from shared.bus.base import (
    DEAD_LETTER_EXCHANGE,
    EVENTS_EXCHANGE,
    EventHandler,
    decode,
    encode,
    event_context,
    event_headers,
    topic_matches,
)
from shared.bus.rabbit.connection import JSON, RabbitConnection, log
from shared.contracts.events import Event
from shared.errors import CofferError, ServiceUnavailable


class RabbitEvents(RabbitConnection):
    """Publishing and consuming events."""

    async def _declare_consumer(self, conn: AbstractConnection, consumer: str) -> None:
        patterns, handler, broadcast = self._consumers[consumer]
        channel = await self._channel(conn, self._lost, publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await self._exchange(channel, EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC)
        if broadcast:
            # A fresh name per connection: an exclusive queue of the lost
            # connection may linger for a moment (RESOURCE_LOCKED otherwise).
            own = await channel.declare_queue(
                f"coffer.bcast.{consumer}.{secrets.token_hex(4)}", exclusive=True, auto_delete=True)
            for pattern in patterns:
                await own.bind(exchange, pattern)
            await own.consume(partial(self._on_broadcast, consumer, handler))
            self._consuming.add(f"events:{consumer}")
            return
        dlx = await channel.declare_exchange(DEAD_LETTER_EXCHANGE, passive=True)  # as ``_declare`` found or made it
        dead = await channel.declare_queue(
            f"coffer.dead.{consumer}", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead.bind(dlx, consumer)
        queue = await channel.declare_queue(
            f"coffer.events.{consumer}",
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                "x-dead-letter-routing-key": consumer,
                "x-delivery-limit": self.delivery_limit,
            },
        )
        for pattern in patterns:
            await queue.bind(exchange, pattern)
        await queue.consume(partial(self._on_event, consumer, handler))
        self._consuming.add(f"events:{consumer}")

    # -- RPC ---------------------------------------------------------------

    def _message(self, event: Event) -> aio_pika.Message:
        return aio_pika.Message(
            encode(event.model_dump(mode="json")),
            content_type=JSON,
            message_id=event.id,
            type=event.type,
            headers=event_headers(event),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            user_id=self.user,
        )

    async def publish(self, event: Event) -> None:
        outcome = (await self._publish_all([event]))[0]
        if outcome is not None:
            raise outcome

    async def publish_many(self, events: Sequence[Event]) -> list[CofferError | None]:
        return await self._publish_all(events)

    async def _publish_all(self, events: Sequence[Event]) -> list[CofferError | None]:
        """Every event published on the confirm channel at once (the frames go in order), then every
        confirm awaited together: one round trip for the batch instead of one per event."""
        if self._closing:
            return [ServiceUnavailable("the bus is closed") for _ in events]
        messages = [self._message(event) for event in events]
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self._connected.wait()
                exchange = self._events_exchange
                assert exchange is not None
                results = await asyncio.gather(
                    *(exchange.publish(m, routing_key=e.type) for m, e in zip(messages, events, strict=True)),
                    return_exceptions=True)
        except TimeoutError:
            return [ServiceUnavailable("event not confirmed by RabbitMQ in time") for _ in events]
        return [None if not isinstance(r, BaseException) else
                ServiceUnavailable(f"event not published ({type(r).__name__})") for r in results]

    async def subscribe(
        self, consumer: str, patterns: Sequence[str], handler: EventHandler, *, broadcast: bool = False
    ) -> None:
        self._consumers[consumer] = (tuple(patterns), handler, broadcast)
        async with self._declare_lock:
            if self._conn is not None and self.connected and f"events:{consumer}" not in self._consuming:
                await self._declare_consumer(self._conn, consumer)

    def _genuine(self, consumer: str, event: Event, message: AbstractIncomingMessage) -> bool:
        """Is this the event as its owner published it, to this consumer?

        The sender (RabbitMQ's validated ``user_id``) owns the type; the routing key is the type and the
        message was never dead-lettered: a service may make a queue of its own whose dead letters go to
        ``coffer.events`` under any key it likes (RabbitMQ checks no topic permission there), so a
        ``certificate.issued`` of pki's could otherwise arrive as ``tenant.deleted``; and the type is one
        the consumer subscribed to, so no handler ever sees a type it did not ask for.
        """
        headers = message.headers or {}
        patterns = self._consumers.get(consumer, ((), None, False))[0]
        return (self._may_publish(event.type, message.user_id) and message.routing_key == event.type
                and "x-death" not in headers and "x-first-death-exchange" not in headers
                and any(topic_matches(p, event.type) for p in patterns))

    async def _on_event(
        self, consumer: str, handler: EventHandler, message: AbstractIncomingMessage
    ) -> None:
        try:
            event = Event.model_validate(decode(message.body))
        except Exception:  # noqa: BLE001 - poison message: straight to the dead letters
            log.error("event_malformed", consumer=consumer)
            await message.reject(requeue=False)
            return
        if not self._genuine(consumer, event, message):
            log.warning("event_refused", consumer=consumer, event_type=event.type, sender=message.user_id,
                        routing_key=message.routing_key)
            await message.reject(requeue=False)  # kept among the dead letters for an operator to look at
            return
        ctx = event_context(event, message.headers)
        ctx.bind()
        retry = True
        try:
            await handler(event, ctx)
            await message.ack()
            return
        except CofferError as exc:
            retry = exc.retryable
            log.warning("event_handler_failed", consumer=consumer, event_type=event.type, code=exc.code)
        except Exception:  # noqa: BLE001
            log.exception("event_handler_crashed", consumer=consumer, event_type=event.type)
        count = (message.headers or {}).get("x-delivery-count")
        attempt = (count if isinstance(count, int) else 0) + 1
        with contextlib.suppress(Exception):
            if retry:
                await asyncio.sleep(min(self.retry_delay * 2 ** (attempt - 1), 5.0))
                await message.nack(requeue=True)
            else:
                await message.nack(requeue=False)

    async def _on_broadcast(
        self, consumer: str, handler: EventHandler, message: AbstractIncomingMessage
    ) -> None:
        """No retries: the state a broadcast updates is also reloaded from its store."""
        try:
            event = Event.model_validate(decode(message.body))
            if self._genuine(consumer, event, message):
                ctx = event_context(event, message.headers)
                ctx.bind()
                await handler(event, ctx)
            else:
                log.warning("event_refused", consumer=consumer, event_type=event.type, sender=message.user_id)
        except Exception:  # noqa: BLE001
            log.exception("broadcast_handler_failed", consumer=consumer)
        with contextlib.suppress(Exception):
            await message.ack()

    async def dead_letter_count(self, consumer: str) -> int:
        if self._conn is None:
            raise ServiceUnavailable("not connected to RabbitMQ")
        async with self._conn.channel() as channel:
            queue = await channel.declare_queue(f"coffer.dead.{consumer}", passive=True)
            return int(queue.declaration_result.message_count or 0)
