"""The audit log: one entry per request that reached authorisation, hash-chained per tenant.

Writes are group-committed: requests queue their entry and wait; one writer
appends whatever has queued up in a single transaction (per tenant: lock the
chain, read its last hash, chain and insert the entries) and then releases
the waiting requests. Each request still gets its answer only after its entry
is committed, at a fraction of the per-request cost (one transaction and one
lock per batch instead of per request).

An entry is written before the response leaves; if it can't be, the request
fails with ``storage_error``. Each entry's hash covers the previous entry's
hash and its own canonical content, so editing or deleting a row breaks the
chain at that row (``verify`` names it). Sensitive request fields (a secret's
value, a revoked token) are stored only as HMAC-SHA256 under a key derived
per tenant from a sealed master key, so "was this value used?" can be asked
(``match``) without the value being stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("coffer.gateway.audit")
MAX_BATCH = 500
_INSERT = ("INSERT INTO audit_log (tenant_id, at, identity_id, action, resource, outcome, status, client_ip,"
           " request_id, fields, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)")

GENESIS = b"\x00" * 32
_COLUMNS = ("seq, tenant_id, at, identity_id, action, resource, outcome, status, client_ip, request_id, fields,"
            " prev_hash, hash")


def _canonical(entry: dict[str, Any]) -> bytes:
    body = {k: entry[k] for k in ("tenant_id", "identity_id", "action", "resource", "outcome", "status",
                                  "client_ip", "request_id", "fields")}
    body["at"] = entry["at"].astimezone(UTC).isoformat()
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev: bytes, entry: dict[str, Any]) -> bytes:
    return hashlib.sha256(prev + _canonical(entry)).digest()


def view(row: Any) -> dict[str, Any]:
    return {"seq": row["seq"], "at": row["at"].isoformat(), "identity_id": row["identity_id"],
            "action": row["action"], "resource": row["resource"], "outcome": row["outcome"],
            "status": row["status"], "client_ip": row["client_ip"], "request_id": row["request_id"],
            "fields": row["fields"], "hash": row["hash"].hex()}


class AuditLog:
    def __init__(self, pool: asyncpg.Pool, master_key: bytes) -> None:
        self.pool = pool
        self._master = master_key
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def field_mac(self, tenant_id: str, value: str) -> str:
        """HMAC-SHA256 of a sensitive value under the tenant's audit key (hex)."""
        key = hmac.new(self._master, b"audit-field|" + tenant_id.encode(), hashlib.sha256).digest()
        return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    async def record(self, *, tenant_id: str, identity_id: str | None, action: str, resource: str,
                     outcome: str, status: int, client_ip: str | None, request_id: str,
                     sensitive: dict[str, str] | None = None) -> None:
        entry: dict[str, Any] = {
            "tenant_id": tenant_id, "identity_id": identity_id, "action": action, "resource": resource[:600],
            "outcome": outcome, "status": status, "client_ip": client_ip, "request_id": request_id,
            "fields": {k: self.field_mac(tenant_id, v) for k, v in (sensitive or {}).items()},
            "at": datetime.now(UTC),
        }
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_forever(), name="audit-writer")
        self._wake.set()
        await future

    async def _write_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                outcomes = await self._append_isolating([entry for entry, _ in batch])
                for (_, future), failure in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if failure is None:
                        future.set_result(None)
                    else:
                        future.set_exception(failure)

    async def _append_isolating(self, entries: list[dict[str, Any]]) -> list[Exception | None]:
        """Append a batch; if it fails, entry by entry, so one bad entry fails only its own request."""
        try:
            await self._append(entries)
            return [None] * len(entries)
        except Exception as exc:  # noqa: BLE001
            if len(entries) == 1:
                return [exc]
            log.warning("audit_batch_failed", size=len(entries), error=type(exc).__name__)
        outcomes: list[Exception | None] = []
        for entry in entries:
            try:
                await self._append([entry])
                outcomes.append(None)
            except Exception as exc:  # noqa: BLE001
                outcomes.append(exc)
        return outcomes

    async def _append(self, entries: list[dict[str, Any]]) -> None:
        by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in entries:
            by_tenant[entry["tenant_id"]].append(entry)
        async with self.pool.acquire() as conn, conn.transaction():
            for tenant_id in sorted(by_tenant):  # one lock order for every replica: no deadlock
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('audit:' || $1))", tenant_id)
                prev = await conn.fetchval(
                    "SELECT hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1", tenant_id) or GENESIS
                rows = []
                for e in by_tenant[tenant_id]:
                    digest = chain_hash(prev, e)
                    rows.append((tenant_id, e["at"], e["identity_id"], e["action"], e["resource"], e["outcome"],
                                 e["status"], e["client_ip"], e["request_id"], e["fields"], prev, digest))
                    prev = digest
                await conn.executemany(_INSERT, rows)

    async def events(self, tenant_id: str, *, identity_id: str | None, path_prefix: str | None,
                     code: str | None, since: datetime | None, until: datetime | None,
                     after: int | None, limit: int, field_mac: str | None = None) -> list[Any]:
        return await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM audit_log WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR identity_id = $2) AND ($3::text IS NULL OR starts_with(resource, $3))"
            " AND ($4::text IS NULL OR outcome = $4) AND ($5::timestamptz IS NULL OR at >= $5)"
            " AND ($6::timestamptz IS NULL OR at < $6) AND ($7::bigint IS NULL OR seq > $7)"
            " AND ($9::text IS NULL OR fields::text LIKE '%' || $9 || '%')"
            " ORDER BY seq LIMIT $8",
            tenant_id, identity_id, path_prefix, code, since, until, after, limit, field_mac)

    async def verify(self, tenant_id: str, batch: int = 5000) -> dict[str, Any]:
        """Walk the tenant's chain; the first entry whose hash or link does not hold."""
        prev, checked, after = GENESIS, 0, 0
        while True:
            rows = await self.pool.fetch(
                f"SELECT {_COLUMNS} FROM audit_log WHERE tenant_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                tenant_id, after, batch)
            for row in rows:
                entry = dict(row)
                problem = None
                if bytes(row["prev_hash"]) != prev:
                    problem = "prev_hash does not match the previous entry (an entry was removed or reordered)"
                elif bytes(row["hash"]) != chain_hash(prev, entry):
                    problem = "hash does not match the entry's content (the entry was edited)"
                if problem:
                    return {"ok": False, "checked": checked,
                            "first_broken": {"seq": row["seq"], "request_id": row["request_id"], "reason": problem}}
                prev, checked = bytes(row["hash"]), checked + 1
            if len(rows) < batch:
                return {"ok": True, "checked": checked, "first_broken": None}
            after = rows[-1]["seq"]
