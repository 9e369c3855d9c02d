"""The services of Coffer, once: their names, the names they answer RPC on, the events each owns.

``EVENT_OWNERS`` says which service may publish each event type (by its first
word): in distributed mode a consumer accepts an event only when RabbitMQ's
validated ``user_id`` is the owning service's user, and the broker's topic
permissions let each service publish only its own types.
"""

from __future__ import annotations

SERVICES: tuple[str, ...] = ("gateway", "secrets", "pki", "lease", "webhooks")
BACKENDS: tuple[str, ...] = SERVICES[1:]

#: the gateway answers RPC as ``iam`` (identity questions other services ask it)
_RPC_NAMES = {"gateway": "iam"}

#: event type prefix -> the service that publishes it
EVENT_OWNERS: dict[str, str] = {
    "token": "gateway", "policy": "gateway", "tenant": "gateway", "system": "gateway", "access": "gateway",
    "secret": "secrets",
    "certificate": "pki", "csr": "pki", "acme": "pki",
    "lease": "lease",
    "webhook": "webhooks",
}


def rpc_name(service: str) -> str:
    """The name ``service`` answers RPC on (``<name>.<method>``)."""
    return _RPC_NAMES.get(service, service)


def service_of(rpc: str) -> str:
    """The service answering RPC as ``rpc``."""
    return next((s for s, r in _RPC_NAMES.items() if r == rpc), rpc)


def owner_of(event_type: str) -> str | None:
    """The service that owns (alone may publish) ``event_type``; ``None`` if no one does."""
    return EVENT_OWNERS.get(event_type.split(".", 1)[0])
