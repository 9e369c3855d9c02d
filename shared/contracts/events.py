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


def resource_of(event: Event) -> str:
    """The policy resource an event is about (what a subscriber must be allowed to ``list`` to receive it).

    Event types without a resource of their own are ``events/<type>``: only a
    policy that reaches that far (``**``, or ``events/**``) lets them through.
    """
    kind, data = event.type.split(".", 1)[0], event.data
    key = {"secret": "path", "policy": "name", "tenant": "tenant_id", "webhook": "webhook_id",
           "lease": "lease_id", "token": "identity_id", "certificate": "ca_id", "csr": "role",
           "access": "policy"}.get(kind)
    value = data.get(key) if key else None
    if isinstance(value, str) and value:
        prefix = {"secret": "secrets", "policy": "policies", "tenant": "tenants", "webhook": "webhooks",
                  "lease": "leases", "token": "identities", "certificate": "pki/cas", "csr": "pki/roles",
                  "access": "policies"}[kind]
        return f"{prefix}/{value}"
    if kind == "token":
        return "sys/tokens"
    return f"events/{event.type}"
