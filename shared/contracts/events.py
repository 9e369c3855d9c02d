"""The event envelope every event on ``coffer.events`` travels in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """``{id, type, tenant_id, occurred_at, request_id, data}``; ``data`` never holds a secret."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    type: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
    tenant_id: str | None = None
    occurred_at: datetime = Field(default_factory=_now)
    request_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
