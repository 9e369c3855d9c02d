"""RPC over RabbitMQ: requests on ``coffer.requests``, replies by direct reply-to (see ``shared.bus.rabbit``);
calls to one service coalesced into few messages under load (``shared.bus.rabbit.batch``)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractConnection,
)
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from shared.bus.base import (
    RPC_EXCHANGE,
    RpcHandler,
    encode,
    handle_request,
)
from shared.bus.rabbit.batch import (
    BATCH_METHOD,
    BATCH_TYPE,
    Call,
    Coalescer,
    ReplyStream,
    decode_batch,
    decode_replies,
    encode_batch,
)
from shared.bus.rabbit.connection import DIRECT_REPLY_TO, JSON, RabbitConnection, log
from shared.context import RequestContext
from shared.errors import CofferError, Forbidden, ServiceUnavailable
from shared.registry import service_of

_FORBIDDEN = encode({"ok": False, "error": Forbidden("this caller may not call that method").to_wire()})


class RabbitRpc(RabbitConnection):
    """Calls and served methods."""

    async def _declare_service(self, conn: AbstractConnection, service: str) -> None:
        channel = await self._channel(conn, self._lost, publisher_confirms=False)
        exchange = await self._exchange(channel, RPC_EXCHANGE, aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue(f"coffer.rpc.{service}", durable=True)
        for method in (*self._services[service], BATCH_METHOD):  # exact keys: a topic exchange routes them as
            await queue.bind(exchange, f"{service}.{method}")     # a direct one would (no wildcard in a method)
        raw = await channel.get_underlay_channel()
        await raw.basic_consume(queue.name, partial(self._on_request, service, raw), no_ack=True)
        self._consuming.add(f"rpc:{service}")

    # -- the caller's side -------------------------------------------------------------------------

    def _coalescer(self, service: str) -> Coalescer:
        coalescer = self._coalescers.get(service)
        if coalescer is None:
            coalescer = self._coalescers[service] = Coalescer(
                service, self._send_batch, window=self.batch_window, max_items=self.batch_max,
                max_bytes=self.batch_bytes)
        return coalescer

    async def _call(self, service: str, method: str, body: bytes, ctx: RequestContext, timeout: float) -> bytes:
        correlation_id = secrets.token_hex(16)
        coalescer = None
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                self._pending[correlation_id] = future
                self._repliers[correlation_id] = self._user_of(service_of(service))
                call = Call(correlation_id, method, body, ctx.to_headers(), max(1, int(timeout * 1000)))
                if self.batch_max > 1:
                    coalescer = self._coalescer(service)
                    coalescer.add(call)  # the batch's outcome reaches ``future``
                else:
                    await self._publish(service, [call])
                reply = await future
        except TimeoutError:
            raise ServiceUnavailable(f"service {service!r} did not answer in time",
                                     details={"service": service}) from None
        finally:
            self._pending.pop(correlation_id, None)
            self._repliers.pop(correlation_id, None)
            if coalescer is not None:
                coalescer.finished()
        return reply

    async def _send_batch(self, service: str, calls: list[Call]) -> None:
        """Publish a finished batch; if it can't go, every call in it fails with the reason."""
        try:
            await self._publish(service, calls)
        except CofferError as exc:
            for call in calls:
                future = self._pending.get(call.id)
                if future is not None and not future.done():
                    future.set_exception(ServiceUnavailable(exc.message, details={"service": service}))

    async def _publish(self, service: str, calls: list[Call]) -> None:
        details = {"service": service}
        channel = self._rpc_channel
        if channel is None or not self.connected:
            raise ServiceUnavailable(f"service {service!r} is not reachable", details=details)
        if len(calls) == 1:
            call = calls[0]
            body, key, headers, correlation_id = call.body, f"{service}.{call.method}", call.headers, call.id
        else:
            body, key, headers = encode_batch(calls), f"{service}.{BATCH_METHOD}", None
            correlation_id = "batch-" + secrets.token_hex(8)
        properties = Basic.Properties(
            content_type=JSON,
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            user_id=self.user,
            headers=headers,
            expiration=str(max(c.expires_ms for c in calls)),
            delivery_mode=1,  # not persistent
        )
        try:
            confirmation = await channel.basic_publish(body, exchange=RPC_EXCHANGE, routing_key=key,
                                                       properties=properties, mandatory=True)
        except aiormq.exceptions.PublishError:
            raise ServiceUnavailable(f"no {service!r} service is consuming", details=details) from None
        except CofferError:
            raise
        except Exception as exc:  # noqa: BLE001 - channel closed under us
            log.warning("rpc_publish_failed", service=service, error=type(exc).__name__)
            raise ServiceUnavailable(f"service {service!r} is not reachable", details=details) from None
        if not isinstance(confirmation, Basic.Ack):
            raise ServiceUnavailable(f"RabbitMQ refused the call to {service!r}", details=details)

    async def _on_reply(self, message: DeliveredMessage) -> None:
        props = message.header.properties
        if props.message_type == BATCH_TYPE:
            for correlation_id, body in decode_replies(message.body):
                self._resolve(correlation_id, body, props.user_id)
        else:
            self._resolve(props.correlation_id or "", message.body, props.user_id)

    def _resolve(self, correlation_id: str, body: bytes, sender: str | None) -> None:
        if correlation_id not in self._pending:
            return
        if sender is None or sender != self._repliers.get(correlation_id):
            log.warning("rpc_reply_refused", sender=sender)  # not from the service called
            return
        future = self._pending.pop(correlation_id)
        if not future.done():
            future.set_result(body)

    # -- the server's side -------------------------------------------------------------------------

    async def serve(self, service: str, handlers: Mapping[str, RpcHandler],
                    callers: Mapping[str, Sequence[str]] | None = None) -> None:
        self._services.setdefault(service, {}).update(handlers)
        self._callers[service] = {**self._callers.get(service, {}), **(callers or {})}
        self._rpc_slots.setdefault(service, asyncio.Semaphore(self.prefetch))
        async with self._declare_lock:
            if self._conn is not None and self.connected and f"rpc:{service}" not in self._consuming:
                await self._declare_service(self._conn, service)

    async def _run(self, service: str, method: str, body: bytes | dict[str, Any], headers: Any,
                   sender: str | None) -> bytes | None:
        """One request, as its sender may make it: the reply body (``None``: its deadline had passed)."""
        ctx = RequestContext.from_headers(headers)
        ctx.bind()
        if not self._may_call(service, method, sender):
            log.warning("rpc_refused", service=service, method=method, sender=sender)
            return _FORBIDDEN
        async with self._rpc_slots[service]:
            return await handle_request(self._services.get(service, {}), method, body, ctx)

    async def _on_request(
        self, service: str, channel: aiormq.abc.AbstractChannel, message: DeliveredMessage
    ) -> None:
        props = message.header.properties
        method = (message.routing_key or "").removeprefix(f"{service}.")
        if method == BATCH_METHOD:
            await self._on_batch(service, channel, message)
            return
        reply = await self._run(service, method, message.body, props.headers, props.user_id)
        if reply is not None and props.reply_to:
            await self._reply(channel, props.reply_to, reply, Basic.Properties(
                content_type=JSON, correlation_id=props.correlation_id, user_id=self.user), method)

    async def _on_batch(self, service: str, channel: aiormq.abc.AbstractChannel, message: DeliveredMessage) -> None:
        """Every call of a batch at once (within the service's slots), each reply streamed back when ready."""
        props = message.header.properties
        entries = decode_batch(message.body)
        if entries is None:
            log.warning("rpc_batch_malformed", service=service, sender=props.user_id)
            return
        reply_to = props.reply_to

        async def send(body: bytes) -> None:
            if reply_to:
                await self._reply(channel, reply_to, body, Basic.Properties(
                    content_type=JSON, message_type=BATCH_TYPE, user_id=self.user), BATCH_METHOD)

        stream = ReplyStream(send, max_bytes=self.batch_bytes)

        async def one(entry: dict[str, Any]) -> None:
            reply = await self._run(service, entry["m"], entry["p"], entry["h"], props.user_id)
            if reply is not None:
                stream.add(entry["id"], reply)

        await asyncio.gather(*(one(entry) for entry in entries))
        await stream.drain()

    async def _reply(self, channel: aiormq.abc.AbstractChannel, reply_to: str, body: bytes,
                     properties: Basic.Properties, method: str) -> None:
        try:
            # RabbitMQ 3.10 returns mandatory replies to direct reply-to
            # even when it delivered them; a lost reply is the caller's
            # timeout either way.
            await channel.basic_publish(body, routing_key=reply_to, timeout=self.publish_timeout,
                                        properties=properties)
        except Exception as exc:  # noqa: BLE001 - the caller's timeout answers for us
            log.warning("rpc_reply_failed", method=method, error=type(exc).__name__)

    # -- events ------------------------------------------------------------
