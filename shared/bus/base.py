"""The bus interface both implementations keep, and the logic they share.

RPC: ``call(service, method, payload, ctx)`` → the handler's JSON result, or a
``CofferError`` of the vocabulary. No answer in time, nobody consuming, or no
broker → ``ServiceUnavailable`` within the timeout, never a hang.

Events: ``publish(event)`` returns once the broker has confirmed it;
``subscribe(consumer, patterns, handler)`` gives each consumer its own durable
queue. A handler that raises is retried; past the delivery limit (or on a
non-retryable ``CofferError``) the event is dead-lettered.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson
import structlog

from shared.context import RequestContext
from shared.contracts.events import Event
from shared.errors import CofferError, InternalError, ServiceUnavailable, from_wire
from shared.failures import storage_error, storage_failure
from shared.metrics import RPC_LATENCY

#: RPC requests, routing key ``<rpc name>.<method>``: a topic exchange, so that RabbitMQ's topic permissions
#: (enforced on topic exchanges only) decide which keys each user may bind (its own service's) and publish (the
#: methods it may call). Earlier versions used the direct ``coffer.rpc``, which any service could bind to; an
#: exchange's type can't change in place, hence the new name (the queues keep theirs).
RPC_EXCHANGE = "coffer.requests"
#: how every successful reply begins (``encode`` writes keys in order and no spaces)
OK_REPLY = b'{"ok":true'
EVENTS_EXCHANGE = "coffer.events"
#: dead letters, routing key = the consumer's name. Topic where the operator declares it (each user may bind only
#: its own consumers' names); found direct on brokers of earlier versions, where it is kept as it is by the
#: shared-credentials bus (the queues name it, so it keeps its name; routing is the same for one-word keys)
DEAD_LETTER_EXCHANGE = "coffer.dlx"

RpcHandler = Callable[[dict[str, Any], RequestContext], Awaitable[Any]]
EventHandler = Callable[[Event, RequestContext], Awaitable[None]]

log = structlog.get_logger("coffer.bus")


def encode(obj: Any) -> bytes:
    """JSON only, never pickle; raises ``TypeError`` on anything else."""
    return orjson.dumps(obj)


def decode(body: bytes) -> Any:
    return orjson.loads(body)


async def handle_request(
    handlers: Mapping[str, RpcHandler], method: str, body: bytes | dict[str, Any], ctx: RequestContext
) -> bytes | None:
    """Run one RPC request; the reply body, or ``None`` when the deadline had passed.

    Shared by both buses so that they answer alike: a handler's ``CofferError``
    becomes an error reply with its code, a database failure ``storage_error``,
    anything else unexpected ``internal_error`` (logged here with its frames,
    never sent).
    """
    if ctx.expired():
        log.warning("rpc_dropped_expired", method=method)
        return None
    handler = handlers.get(method)
    try:
        if handler is None:
            raise ServiceUnavailable(f"method {method!r} is not served")
        try:
            # a batch's calls arrive decoded already (with the batch): not encoded and parsed again
            payload = body if isinstance(body, dict) else decode(body)
        except orjson.JSONDecodeError:
            raise InternalError("request body is not JSON") from None
        if not isinstance(payload, dict):
            raise InternalError("request body is not a JSON object")
        result = await handler(payload, ctx)
        reply: dict[str, Any] = {"ok": True, "result": result}
    except CofferError as exc:
        log.info("rpc_error", method=method, code=exc.code)
        reply = {"ok": False, "error": exc.to_wire()}
    except Exception as exc:
        if storage_failure(exc):
            log.exception("rpc_storage_failed", method=method)
            reply = {"ok": False, "error": storage_error(exc, "the service's").to_wire()}
        else:
            log.exception("rpc_handler_crashed", method=method)
            reply = {"ok": False, "error": InternalError().to_wire()}
    log.debug("rpc_handled", method=method, ok=reply["ok"])
    try:
        return encode(reply)
    except TypeError:
        log.error("rpc_result_not_json", method=method)
        return encode({"ok": False, "error": InternalError().to_wire()})


def unpack_reply(body: bytes) -> Any:
    """The result of a reply body, or raise its error (unknown codes → ``internal_error``)."""
    try:
        reply = decode(body)
    except orjson.JSONDecodeError:
        raise InternalError("malformed reply from service") from None
    if isinstance(reply, dict) and reply.get("ok") is True:
        return reply.get("result")
    raise from_wire(reply.get("error") if isinstance(reply, dict) else None)


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more words."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


@lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """The pattern's positions reachable after each word (an NFA walked in step): at most len(pattern) ×
    len(words) steps whatever the pattern. A recursive search here took milliseconds for a tenant's stream
    filter of many ``#``s (``#.#.…#.z``) — the event loop's time, per event."""
    states = _skip_hashes({0}, pattern)
    for word in words:
        states = _skip_hashes({i + (pattern[i] != "#") for i in states if i < len(pattern)
                               and pattern[i] in ("#", "*", word)}, pattern)
        if not states:
            return False
    return len(pattern) in states


def _skip_hashes(states: set[int], pattern: tuple[str, ...]) -> set[int]:
    """``states`` and every position after a ``#`` there (``#`` may be zero words)."""
    out, todo = set(states), list(states)
    while todo:
        i = todo.pop()
        if i < len(pattern) and pattern[i] == "#" and i + 1 not in out:
            out.add(i + 1)
            todo.append(i + 1)
    return out


class Bus(abc.ABC):
    """RPC + events; implemented by ``InProcessBus`` and ``RabbitBus``."""

    def __init__(self, *, rpc_timeout: float = 5.0) -> None:
        self.rpc_timeout = rpc_timeout

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and declare the topology."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consuming, fail pending calls, disconnect."""

    async def call(
        self,
        service: str,
        method: str,
        payload: Mapping[str, Any],
        ctx: RequestContext,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Ask ``<service>.<method>`` and wait for the answer (at most ``timeout``); its error raised."""
        return unpack_reply(await self.call_raw(service, method, payload, ctx, timeout=timeout))

    async def call_raw(
        self,
        service: str,
        method: str,
        payload: Mapping[str, Any] | bytes,
        ctx: RequestContext,
        *,
        timeout: float | None = None,
    ) -> bytes:
        """``call``, answering the reply's bytes (``{"ok": …, "result"|"error": …}``) for a typed client
        to validate in one pass; a transport failure still raises ``service_unavailable``."""
        started = time.perf_counter()
        outcome = "ok"
        timeout = self.rpc_timeout if timeout is None else timeout
        try:
            # JSON only (a TypeError here, before anything is sent); bytes: a typed client's, already JSON
            body = payload if isinstance(payload, bytes) else encode(dict(payload))
            reply = await self._call(service, method, body, ctx.with_deadline(timeout), timeout)
            if not reply.startswith(OK_REPLY):
                outcome = "error"
            return reply
        except CofferError as exc:
            outcome = exc.code
            raise
        finally:
            RPC_LATENCY.labels(service, method, outcome).observe(time.perf_counter() - started)

    @abc.abstractmethod
    async def _call(self, service: str, method: str, body: bytes, ctx: RequestContext, timeout: float) -> bytes:
        """The implementation's round trip: ``body`` is the encoded payload, ``ctx`` carries the deadline;
        the answer is the reply's body."""

    @abc.abstractmethod
    async def serve(self, service: str, handlers: Mapping[str, RpcHandler],
                    callers: Mapping[str, Sequence[str]] | None = None) -> None:
        """Answer ``<service>.<method>`` for each method in ``handlers``.

        ``callers``: the services (besides the default, the gateway) that may
        call a method, by method; where the bus can tell who sent a request
        (RabbitMQ's validated user_id), any other sender is refused.
        """

    @abc.abstractmethod
    async def publish(self, event: Event) -> None:
        """Publish and wait for the broker's confirm; ``ServiceUnavailable`` if it can't."""

    async def publish_many(self, events: Sequence[Event]) -> list[CofferError | None]:
        """Publish ``events`` in order and wait for their confirms together: each one's outcome (``None``
        when confirmed). This one publishes them one by one; a bus that can do better does."""
        outcomes: list[CofferError | None] = []
        for event in events:
            try:
                await self.publish(event)
                outcomes.append(None)
            except CofferError as exc:
                outcomes.append(exc)
        return outcomes

    @abc.abstractmethod
    async def subscribe(
        self, consumer: str, patterns: Sequence[str], handler: EventHandler, *, broadcast: bool = False
    ) -> None:
        """Deliver events whose type matches one of ``patterns`` to ``handler``.

        Replicas of one ``consumer`` share its durable queue (each event to one
        of them); with ``broadcast`` every process gets every event on a queue
        of its own that lives as long as its connection (cache invalidation,
        revocations: state the process can also reload from the database).
        """

    @abc.abstractmethod
    async def dead_letter_count(self, consumer: str) -> int:
        """How many of ``consumer``'s events were dead-lettered (and not yet drained)."""


def event_context(event: Event, headers: Mapping[str, Any] | None = None) -> RequestContext:
    """The context an event handler runs in: headers first, the envelope as fallback."""
    ctx = RequestContext.from_headers(headers)
    if headers is None or "x-request-id" not in headers:
        ctx = ctx.model_copy(update={"request_id": event.request_id or ctx.request_id})
    if ctx.tenant_id is None and event.tenant_id:
        ctx = ctx.model_copy(update={"tenant_id": event.tenant_id})
    return ctx


def event_headers(event: Event) -> dict[str, Any]:
    return RequestContext(
        request_id=event.request_id or "req_none", tenant_id=event.tenant_id
    ).to_headers()
