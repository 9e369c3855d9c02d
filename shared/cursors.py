"""Opaque list cursors: sealed, HMAC-SHA256 signed, bound to tenant + query, expiring.

A cursor is ``base64url(sealed) "." base64url(hmac of sealed)``; the sealed
body (AES-256-GCM under a key derived from the cursor key) names the tenant, a
digest of the query it continues (prefix, limit, list kind), where to resume,
and when it expires. Where to resume is the last row of the page *before* the
gateway leaves out what the caller may not list — a secret's path, a role's
name — so it must not be readable: a plain body let a narrow caller read every
hidden path off the cursors. A tampered, foreign or expired cursor is
``invalid_cursor``. Replicas share the key (a sealed key in the database).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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


#: ``visible_page``: rows read per query, and at most per page (a page of hidden rows ends early, with a cursor)
VISIBLE_CHUNK = 500
VISIBLE_WINDOW = 5000

class CursorCodec:
    """Signs and checks cursors with one key."""

    def __init__(self, key: bytes, ttl: int = TTL_SECONDS) -> None:
        self._key = key
        self._seal = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                 info=b"coffer/cursor/seal").derive(key))
        self.ttl = ttl

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()

    def encode(self, tenant_id: str, query: dict[str, Any], after: Any) -> str:
        doc = json.dumps(
            {"q": _query_digest(tenant_id, query), "a": after, "e": int(time.time()) + self.ttl},
            separators=(",", ":"),
        ).encode()
        nonce = secrets.token_bytes(12)
        body = nonce + self._seal.encrypt(nonce, doc, None)
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

    async def visible_page(
        self,
        tenant_id: str,
        query: dict[str, Any],
        cursor: str | None,
        limit: int,
        fetch: Callable[[Any, int], Awaitable[Sequence[Row]]],
        resume_after: Callable[[Row], Any],
        keep: Callable[[Sequence[Row]], Awaitable[Sequence[Row]]],
        *,
        chunk: int = VISIBLE_CHUNK,
        window: int = VISIBLE_WINDOW,
    ) -> tuple[list[Row], str | None]:
        """``page`` for a list filtered after the query (by what the caller may see): the rows are kept
        *before* the page is cut, so neither the items nor ``next_cursor`` tell a hidden row from none.

        Rows are read ``limit + 1`` first, then ``chunk`` at a time, through a window of ``window`` rows.
        ``next_cursor`` resumes after the page's last item when more than ``limit`` kept rows were found, after
        the window when it is used up and rows go on, else it is null: a function of the kept rows and of the
        list's length alone."""
        position = self.decode(cursor, tenant_id, query) if cursor else None
        found: list[Row] = []
        scanned, size = 0, limit + 1  # a page of rows the caller may all see costs what ``page`` does
        while True:
            rows = list(await fetch(position, size))
            scanned += len(rows)
            found += await keep(rows)
            if len(found) > limit:
                return found[:limit], self.encode(tenant_id, query, resume_after(found[limit - 1]))
            if len(rows) < size:
                return found, None
            size = max(size, chunk)
            position = resume_after(rows[-1])
            if scanned >= window:
                return found, self.encode(tenant_id, query, position)

    def decode(self, cursor: str, tenant_id: str, query: dict[str, Any]) -> Any:
        """Where to resume; ``invalid_cursor`` unless signed by us for this tenant + query and fresh."""
        try:
            body_text, mac_text = cursor.split(".")
            body, mac = _unb64(body_text), _unb64(mac_text)
        except (ValueError, TypeError):
            raise InvalidCursor("cursor is malformed") from None
        if not hmac.compare_digest(mac, self._mac(body)):
            raise InvalidCursor("cursor is not valid")
        doc = self._open(body)
        if not hmac.compare_digest(str(doc.get("q")), _query_digest(tenant_id, query)):
            raise InvalidCursor("cursor belongs to another query")
        if int(doc.get("e", 0)) < time.time():
            raise InvalidCursor("cursor expired")
        return doc.get("a")

    def _open(self, body: bytes) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = json.loads(self._seal.decrypt(body[:12], body[12:], None))
        except (InvalidTag, ValueError):  # signed by our key, yet not ours to open: treat as tampered
            raise InvalidCursor("cursor is not valid") from None
        return doc

    def resumes_at(self, cursor: str) -> Any:
        """Where a cursor of ours resumes, whatever its tenant, query or age (tests look at resume points)."""
        body_text, _ = cursor.split(".")
        return self._open(_unb64(body_text)).get("a")
