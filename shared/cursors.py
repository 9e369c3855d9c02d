"""Opaque list cursors: HMAC-SHA256 signed, bound to tenant + query, expiring.

A cursor is ``base64url(json) "." base64url(hmac)``; its body names the
tenant, a digest of the query it continues (prefix, limit, list kind), where
to resume, and when it expires. A tampered, foreign or expired cursor is
``invalid_cursor``. Replicas share the key (a sealed key in the database).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from shared.errors import InvalidCursor

TTL_SECONDS = 3600
Row = TypeVar("Row")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _query_digest(tenant_id: str, query: dict[str, Any]) -> str:
    canonical = json.dumps([tenant_id, query], sort_keys=True, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest()[:16])


class CursorCodec:
    """Signs and checks cursors with one key."""

    def __init__(self, key: bytes, ttl: int = TTL_SECONDS) -> None:
        self._key = key
        self.ttl = ttl

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def encode(self, tenant_id: str, query: dict[str, Any], after: Any) -> str:
        body = json.dumps(
            {"q": _query_digest(tenant_id, query), "a": after, "e": int(time.time()) + self.ttl},
            separators=(",", ":"),
        ).encode()
        return f"{_b64(body)}.{_b64(self._mac(body))}"

    async def page(
        self,
        tenant_id: str,
        query: dict[str, Any],
        cursor: str | None,
        limit: int,
        fetch: Callable[[Any, int], Awaitable[Sequence[Row]]],
        resume_after: Callable[[Row], Any],
    ) -> tuple[list[Row], str | None]:
        """One page of a list: ``limit`` rows from where ``cursor`` says, and the next page's cursor.

        ``fetch(after, n)`` returns up to ``n`` rows after the resume point
        (``None``: from the start); one more than ``limit`` is asked for to know
        whether a next page exists. ``query`` is everything the list depends on
        (``limit`` included): a cursor only continues the query it came from.
        """
        after = self.decode(cursor, tenant_id, query) if cursor else None
        rows = list(await fetch(after, limit + 1))
        next_cursor = self.encode(tenant_id, query, resume_after(rows[limit - 1])) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def decode(self, cursor: str, tenant_id: str, query: dict[str, Any]) -> Any:
        """Where to resume; ``invalid_cursor`` unless signed by us for this tenant + query and fresh."""
        try:
            body_text, mac_text = cursor.split(".")
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, TypeError):
            raise InvalidCursor("cursor is malformed") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidCursor("cursor is not valid")
        doc = json.loads(body)
        if not hmac.compare_digest(str(doc.get("q")), _query_digest(tenant_id, query)):
            raise InvalidCursor("cursor belongs to another query")
        if int(doc.get("e", 0)) < time.time():
            raise InvalidCursor("cursor expired")
        return doc.get("a")
