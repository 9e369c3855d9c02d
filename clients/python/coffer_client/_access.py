"""Access requests (api.md, "Access requests"): ask for a requestable policy, decide, end a grant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from coffer_client._api import _Api
from coffer_client._base import _Call, _drop_none, _identity, _seg


class _AccessApi(_Api):
    """Just-in-time access: a requestable policy for a while, once others approved; it ends by itself."""

    def request_access(self, policy: str, duration: str, reason: str) -> dict[str, Any]:
        """Ask for ``policy`` for ``duration`` (``1h``): the request, ``pending``."""
        return self._call(_Call("POST", "/v1/access-requests",
                                {"policy": policy, "duration": duration, "reason": reason}))

    def list_access_requests(self, *, status: str | None = None, requester: str | None = None,
                             policy: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        """The requests you may see (yours; those of policies you may approve or list)."""
        return self._list(_Call("GET", "/v1/access-requests", params=_drop_none(
            {"status": status, "requester": requester, "policy": policy, "limit": page_size})), _identity)

    def get_access_request(self, request_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/access-requests/{_seg(request_id)}"))

    def _decide(self, request_id: str, action: str, comment: str | None) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/access-requests/{_seg(request_id)}:{action}",
                                _drop_none({"comment": comment})))

    def approve_access(self, request_id: str, comment: str | None = None) -> dict[str, Any]:
        """One approval; the last one needed grants the policy (``approved``, ``expires_at``)."""
        return self._decide(request_id, "approve", comment)

    def deny_access(self, request_id: str, comment: str | None = None) -> dict[str, Any]:
        return self._decide(request_id, "deny", comment)

    def cancel_access(self, request_id: str, comment: str | None = None) -> dict[str, Any]:
        """Your own request: pending, or a grant that ends now."""
        return self._decide(request_id, "cancel", comment)

    def revoke_access(self, request_id: str, comment: str | None = None) -> dict[str, Any]:
        """End a grant now (an approver)."""
        return self._decide(request_id, "revoke", comment)
