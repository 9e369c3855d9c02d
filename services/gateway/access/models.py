"""What callers send to the access-request API and what it shows them, without I/O (api.md §14)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictStr

from services.gateway.edge.routes import PageQuery
from services.gateway.iam.models import POLICY_NAME
from shared.contracts import DURATION_SCHEMA, Contract

#: what a request can be; ``pending`` and ``approved`` are open (pending_until / expires_at still ahead)
STATUSES = ("pending", "approved", "denied", "cancelled", "revoked", "expired")
Status = Literal["pending", "approved", "denied", "cancelled", "revoked", "expired"]
#: a reason or a comment: a sentence or a paragraph for the people who decide (and the chat they read)
TEXT_MAX = 1000


class AccessRequestCreate(Contract):
    """``POST /v1/access-requests``."""

    policy: StrictStr = Field(pattern=POLICY_NAME)
    duration: Annotated[StrictStr, Field(max_length=40, json_schema_extra=DURATION_SCHEMA)]
    reason: StrictStr = Field(min_length=1, max_length=TEXT_MAX)


class AccessDecision(Contract):
    """``:approve``, ``:deny``, ``:cancel``, ``:revoke``: an optional comment, kept with the decision and in the
    audit entry."""

    comment: StrictStr | None = Field(None, max_length=TEXT_MAX)


class AccessQuery(PageQuery):
    """``GET /v1/access-requests``: filters, and the page."""

    status: Status | None = None
    requester: str | None = Field(None, min_length=1, max_length=64)
    policy: str | None = Field(None, pattern=POLICY_NAME)


def access_view(row: Any) -> dict[str, Any]:
    """A request as the API shows it; ``status`` as it is now (a pending request past ``pending_until`` and a
    grant past ``expires_at`` read ``expired`` before the sweeper writes it)."""
    return {
        "id": row["id"], "status": row["status"], "requester": row["requester_id"], "policy": row["policy"],
        "duration": row["duration"], "reason": row["reason"], "approvals_required": row["approvals_required"],
        "approvals": row["approvals"], "pending_until": row["pending_until"], "binding_id": row["binding_id"],
        "expires_at": row["expires_at"], "decided_by": row["decided_by"], "comment": row["comment"],
        "decided_at": row["decided_at"], "created_at": row["created_at"], "updated_at": row["updated_at"],
    }
