"""The bus: RPC (``coffer.requests``) and events (``coffer.events``), two implementations.

``create_bus(settings, name)`` picks RabbitMQ when ``COFFER_AMQP_URL`` is set,
else the in-process bus (embedded mode only).
"""

from shared.bus.base import Bus, EventHandler, RpcHandler, topic_matches
from shared.bus.memory import InProcessBus
from shared.bus.rabbit import RabbitBus
from shared.config import Settings

__all__ = ["Bus", "EventHandler", "InProcessBus", "RabbitBus", "RpcHandler", "create_bus", "topic_matches"]


def create_bus(settings: Settings, name: str) -> Bus:
    """The bus this process should use (not started)."""
    if settings.amqp_url is not None:
        return RabbitBus(
            settings.amqp_url.get_secret_value(), name=name, rpc_timeout=settings.rpc_timeout,
            users=settings.bus_users, batch_max=settings.rpc_batch_max, batch_window=settings.rpc_batch_window,
        )
    return InProcessBus(rpc_timeout=settings.rpc_timeout)
