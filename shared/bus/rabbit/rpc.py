"""RPC over RabbitMQ: requests on ``coffer.rpc``, replies by direct reply-to (see ``shared.bus.rabbit``)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping, Sequence
from functools import partial

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
from shared.bus.rabbit.connection import DIRECT_REPLY_TO, JSON, RabbitConnection, log
from shared.context import RequestContext
from shared.errors import CofferError, Forbidden, ServiceUnavailable
from shared.registry import service_of


class RabbitRpc(RabbitConnection):
    """Calls and served methods."""

    async def _declare_service(self, conn: AbstractConnection, service: str) -> None:
        channel = await self._channel(conn, self._lost, publisher_confirms=False)
        exchange = await self._exchange(channel, RPC_EXCHANGE, aio_pika.ExchangeType.DIRECT)
        queue = await channel.declare_queue(f"coffer.rpc.{service}", durable=True)
        for method in self._services[service]:
            await queue.bind(exchange, f"{service}.{method}")
        raw = await channel.get_underlay_channel()
        await raw.basic_consume(queue.name, partial(self._on_request, service, raw), no_ack=True)
        self._consuming.add(f"rpc:{service}")

    async def _call(self, service: str, method: str, body: bytes, ctx: RequestContext, timeout: float) -> bytes:
        correlation_id = secrets.token_hex(16)
        details = {"service": service}
        try:
            async with asyncio.timeout(timeout):
                await self._connected.wait()
                assert self._rpc_channel is not None
                future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
                self._pending[correlation_id] = future
                self._repliers[correlation_id] = self._user_of(service_of(service))
                properties = Basic.Properties(
                    content_type=JSON,
                    correlation_id=correlation_id,
                    reply_to=DIRECT_REPLY_TO,
                    user_id=self.user,
                    headers=ctx.to_headers(),
                    expiration=str(max(1, int(timeout * 1000))),
                    delivery_mode=1,  # not persistent
                )
                try:
                    confirmation = await self._rpc_channel.basic_publish(
                        body, exchange=RPC_EXCHANGE, routing_key=f"{service}.{method}",
                        properties=properties, mandatory=True,
                    )
                except aiormq.exceptions.PublishError:
                    raise ServiceUnavailable(
                        f"no {service!r} service is consuming", details=details
                    ) from None
                except CofferError:
                    raise
                except Exception as exc:  # noqa: BLE001 - channel closed under us
                    log.warning("rpc_publish_failed", service=service, error=type(exc).__name__)
                    raise ServiceUnavailable(
                        f"service {service!r} is not reachable", details=details
                    ) from None
                if not isinstance(confirmation, Basic.Ack):
                    raise ServiceUnavailable(f"RabbitMQ refused the call to {service!r}", details=details)
                reply = await future
        except TimeoutError:
            raise ServiceUnavailable(
                f"service {service!r} did not answer in time", details=details
            ) from None
        finally:
            self._pending.pop(correlation_id, None)
            self._repliers.pop(correlation_id, None)
        return reply

    async def _on_reply(self, message: DeliveredMessage) -> None:
        props = message.header.properties
        correlation_id = props.correlation_id or ""
        if correlation_id not in self._pending:
            return
        if props.user_id is None or props.user_id != self._repliers.get(correlation_id):
            log.warning("rpc_reply_refused", sender=props.user_id)  # not from the service called
            return
        future = self._pending.pop(correlation_id)
        if not future.done():
            future.set_result(message.body)

    async def serve(self, service: str, handlers: Mapping[str, RpcHandler],
                    callers: Mapping[str, Sequence[str]] | None = None) -> None:
        self._services.setdefault(service, {}).update(handlers)
        self._callers[service] = {**self._callers.get(service, {}), **(callers or {})}
        self._rpc_slots.setdefault(service, asyncio.Semaphore(self.prefetch))
        async with self._declare_lock:
            if self._conn is not None and self.connected and f"rpc:{service}" not in self._consuming:
                await self._declare_service(self._conn, service)

    async def _on_request(
        self, service: str, channel: aiormq.abc.AbstractChannel, message: DeliveredMessage
    ) -> None:
        props = message.header.properties
        ctx = RequestContext.from_headers(props.headers)
        ctx.bind()
        routing_key = message.routing_key or ""
        method = routing_key.removeprefix(f"{service}.")
        if self._may_call(service, method, props.user_id):
            async with self._rpc_slots[service]:
                reply = await handle_request(self._services.get(service, {}), method, message.body, ctx)
        else:
            log.warning("rpc_refused", service=service, method=method, sender=props.user_id)
            reply = encode({"ok": False, "error": Forbidden("this caller may not call that method").to_wire()})
        if reply is not None and props.reply_to:
            try:
                # RabbitMQ 3.10 returns mandatory replies to direct reply-to
                # even when it delivered them; a lost reply is the caller's
                # timeout either way.
                await channel.basic_publish(
                    reply, routing_key=props.reply_to, timeout=self.publish_timeout,
                    properties=Basic.Properties(content_type=JSON, correlation_id=props.correlation_id,
                                                user_id=self.user),
                )
            except Exception as exc:  # noqa: BLE001 - the caller's timeout answers for us
                log.warning("rpc_reply_failed", method=method, error=type(exc).__name__)

    # -- events ------------------------------------------------------------

