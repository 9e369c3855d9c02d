"""The in-process bus: the embedded mode's bus and the fast unit tests' one.

It keeps the RabbitMQ bus's contract (the same contract suite runs on both):
JSON-only bodies (payloads are encoded and decoded, so nothing is shared by
reference), deadlines honoured, nobody serving → ``service_unavailable`` at
once, events routed by topic patterns, one queue per consumer, failed
handlers retried and then dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from shared.bus.base import (
    Bus,
    EventHandler,
    RpcHandler,
    decode,
    encode,
    event_context,
    event_headers,
    handle_request,
    topic_matches,
)
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.errors import CofferError, ServiceUnavailable

log = structlog.get_logger("coffer.bus.memory")


class InProcessBus(Bus):
    """RPC and events between coroutines of one process."""

    def __init__(
        self,
        *,
        rpc_timeout: float = 5.0,
        delivery_limit: int = 20,
        retry_delay: float = 0.05,
    ) -> None:
        super().__init__(rpc_timeout=rpc_timeout)
        self.delivery_limit = delivery_limit
        self.retry_delay = retry_delay
        self._services: dict[str, dict[str, RpcHandler]] = {}
        self._consumers: dict[str, tuple[tuple[str, ...], EventHandler]] = {}
        self._dead: dict[str, list[Event]] = defaultdict(list)
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = False

    async def start(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _call(self, service: str, method: str, body: bytes, ctx: RequestContext, timeout: float) -> bytes:
        handlers = self._services.get(service)
        if not self._open or handlers is None or method not in handlers:
            raise ServiceUnavailable(
                f"service {service!r} is not available", details={"service": service}
            )
        try:
            async with asyncio.timeout(timeout):
                reply = await handle_request(handlers, method, body, RequestContext.from_headers(ctx.to_headers()))
        except TimeoutError:
            raise ServiceUnavailable(
                f"service {service!r} did not answer in time", details={"service": service}
            ) from None
        if reply is None:
            raise ServiceUnavailable(
                f"service {service!r} did not answer in time", details={"service": service}
            )
        return reply

    async def serve(self, service: str, handlers: Mapping[str, RpcHandler],
                    callers: Mapping[str, Sequence[str]] | None = None) -> None:
        # one process, one trust domain: every caller is in it
        self._services.setdefault(service, {}).update(handlers)

    async def publish(self, event: Event) -> None:
        if not self._open:
            raise ServiceUnavailable("the bus is closed")
        body = encode(event.model_dump(mode="json"))
        headers = event_headers(event)
        for consumer, (patterns, handler) in self._consumers.items():
            if any(topic_matches(p, event.type) for p in patterns):
                task = asyncio.create_task(self._deliver(consumer, handler, body, headers))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def subscribe(
        self, consumer: str, patterns: Sequence[str], handler: EventHandler, *, broadcast: bool = False
    ) -> None:
        # one process: a broadcast consumer is an ordinary one
        self._consumers[consumer] = (tuple(patterns), handler)

    async def dead_letter_count(self, consumer: str) -> int:
        return len(self._dead.get(consumer, ()))

    async def _deliver(
        self, consumer: str, handler: EventHandler, body: bytes, headers: dict[str, Any]
    ) -> None:
        event = Event.model_validate(decode(body))
        for attempt in range(1, self.delivery_limit + 1):
            ctx = event_context(event, headers)
            ctx.bind()
            try:
                await handler(event, ctx)
                return
            except CofferError as exc:
                log.warning("event_handler_failed", consumer=consumer, event_type=event.type,
                            code=exc.code, attempt=attempt)
                if not exc.retryable:
                    break
            except Exception:
                log.exception("event_handler_crashed", consumer=consumer,
                              event_type=event.type, attempt=attempt)
            await asyncio.sleep(min(self.retry_delay * 2 ** (attempt - 1), 5.0))
        log.error("event_dead_lettered", consumer=consumer, event_type=event.type, event_id=event.id)
        self._dead[consumer].append(event)
