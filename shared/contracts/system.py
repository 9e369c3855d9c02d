"""RPC methods every service answers (``<service>.ping``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class PingResult(BaseModel):
    """Reply of ``<service>.ping``: the service is up and its storage answers."""

    model_config = ConfigDict(frozen=True)

    service: str
    status: str = "ok"
    #: outbox rows not yet confirmed by the broker (for /metrics)
    outbox_backlog: int | None = None
