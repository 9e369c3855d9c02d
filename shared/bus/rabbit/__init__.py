"""The RabbitMQ bus (aio-pika), with its own reconnect supervisor.

Topology (declared anew on every connection, so a broker restart loses
nothing but in-flight replies):

- ``coffer.requests`` (topic, bound with exact keys only): ``<service>.<method>`` → durable queue
  ``coffer.rpc.<service>``; requests carry ``reply_to`` = direct reply-to,
  ``correlation_id``, context headers and an expiration equal to the call's
  timeout; published ``mandatory`` on a confirm channel, so a method nobody
  serves fails at once. Servers consume without acks: an RPC is at-most-once
  end to end (direct reply-to already is), so a request is never run twice
  because a replica died after doing it; a lost request is the caller's
  ``service_unavailable``. Each service's handlers run at most ``prefetch`` at a time.
- ``coffer.events`` (topic): one durable quorum queue ``coffer.events.<consumer>``
  per consumer, dead-lettering through ``coffer.dlx`` (routing key: the consumer)
  into ``coffer.dead.<consumer>`` past ``x-delivery-limit``.

The RPC hot path (publish, reply, consume) talks to aio-pika's underlying
aiormq channels directly: aio-pika's message objects cost a third of a round
trip (bench: raw aio-pika 2.9k calls/s, aiormq 4.3k on the same machine).

Who may say what: every message carries RabbitMQ's ``user_id``, which the
broker validates against the connection's user (a spoofed one closes the
channel). With ``users`` (one RabbitMQ user per service, distributed mode) an
RPC request is served only if its sender is a service allowed to call that
method (the gateway, unless ``serve`` names others), a reply is accepted only
from the service called, and an event only from the service that owns its
type (``shared.registry.EVENT_OWNERS``); anything else is refused and logged.
The broker's permissions keep each user to its own queues and event types,
and all three exchanges are topic exchanges so that its topic permissions
decide, by routing key, what each user may bind a queue to: its own RPC
name's requests, the event types it consumes, its own consumers' dead
letters; and what it may publish: the methods it may call, the event types
it owns (``services.provision``). Replies need write access to the default
exchange, through which any service can put a message into any queue by
name: the checks here are what stop that. Exchanges are then the operator's
(declared passively). Without ``users`` every service is this connection's
user.

We use neither ``connect_robust`` nor aio-pika's RPC pattern: the robust channel
does not restore direct reply-to consumers reliably (aio-pika #231, #679) and
aio-pika's RPC pattern pickles and has no call timeout. Instead ``_supervise``
reconnects with backoff and re-declares everything; calls in flight when the
connection drops fail at once with ``service_unavailable`` (their reply is
gone: direct reply-to is at-most-once), calls made while disconnected wait
for the connection up to their own timeout.
"""


from shared.bus.rabbit.connection import DEFAULT_CALLERS, DIRECT_REPLY_TO
from shared.bus.rabbit.events import RabbitEvents
from shared.bus.rabbit.rpc import RabbitRpc

__all__ = ["DEFAULT_CALLERS", "DIRECT_REPLY_TO", "RabbitBus"]


class RabbitBus(RabbitRpc, RabbitEvents):
    """RPC and events over RabbitMQ."""
