"""The request context that travels with every RPC and event.

It is created at the edge (gateway middleware) and carried in AMQP headers;
each consumer rebinds it, with structlog's contextvars, per message.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from shared.errors import Forbidden

_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_QUOTA_NAME = re.compile(r"^[a-z_]{1,40}$")


def new_request_id() -> str:
    """A fresh ``req_…`` id."""
    return "req_" + secrets.token_hex(12)


def sane_request_id(value: str | None) -> str:
    """The caller's id when it is sane (short, printable, no spaces), else a new one."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


class RequestContext(BaseModel):
    """Who asks, on whose behalf, and until when the answer is still wanted."""

    model_config = ConfigDict(frozen=True)

    request_id: str = Field(default_factory=new_request_id)
    tenant_id: str | None = None
    identity_id: str | None = None
    scopes: tuple[str, ...] = ()
    #: absolute deadline, seconds since the epoch; ``None`` = no deadline.
    deadline: float | None = None
    #: the tenant's quotas (``max_secrets`` …), as the gateway knows them: a service enforces the
    #: ones of its area atomically with the create, without asking the gateway
    quotas: dict[str, int] = Field(default_factory=dict)

    def require_tenant(self) -> str:
        """The tenant the request acts in; ``forbidden`` when a request comes without one."""
        if not self.tenant_id:
            raise Forbidden("no tenant in the request context")
        return self.tenant_id

    def quota(self, name: str) -> int | None:
        return self.quotas.get(name)

    def with_deadline(self, timeout: float) -> RequestContext:
        """This context with a deadline ``timeout`` seconds from now (the earlier one wins)."""
        deadline = time.time() + timeout
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        return self.model_copy(update={"deadline": deadline})

    def expired(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def to_headers(self) -> dict[str, Any]:
        """AMQP headers (the same for RPC and events)."""
        headers: dict[str, Any] = {"x-request-id": self.request_id}
        if self.tenant_id:
            headers["x-tenant-id"] = self.tenant_id
        if self.identity_id:
            headers["x-identity-id"] = self.identity_id
        if self.scopes:
            headers["x-scopes"] = " ".join(self.scopes)
        if self.deadline is not None:
            headers["x-deadline"] = f"{self.deadline:.6f}"
        if self.quotas:
            headers["x-quotas"] = ",".join(f"{k}={v}" for k, v in self.quotas.items())
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any] | None) -> RequestContext:
        """Rebuild from AMQP headers; junk values are dropped, not trusted."""
        h = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (headers or {}).items()}
        deadline: float | None
        try:
            deadline = float(h["x-deadline"]) if "x-deadline" in h else None
        except (TypeError, ValueError):
            deadline = None
        scopes = h.get("x-scopes")
        quotas = {}
        for pair in (h.get("x-quotas") or "").split(",") if isinstance(h.get("x-quotas"), str) else ():
            name, _, value = pair.partition("=")
            if _QUOTA_NAME.fullmatch(name) and value.isdigit() and len(value) <= 12:
                quotas[name] = int(value)
        return cls(
            request_id=sane_request_id(h.get("x-request-id") if isinstance(h.get("x-request-id"), str) else None),
            tenant_id=h.get("x-tenant-id") if isinstance(h.get("x-tenant-id"), str) else None,
            identity_id=h.get("x-identity-id") if isinstance(h.get("x-identity-id"), str) else None,
            scopes=tuple(scopes.split()) if isinstance(scopes, str) else (),
            deadline=deadline,
            quotas=quotas,
        )

    def bind(self) -> None:
        """Clear and rebind structlog's context for this message or request."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            request_id=self.request_id, tenant_id=self.tenant_id, identity_id=self.identity_id
        )
