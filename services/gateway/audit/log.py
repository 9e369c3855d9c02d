"""The audit log: one entry per request that reached authorisation, hash-chained per tenant.

Writes are group-committed: requests queue their entry and wait; one writer
appends whatever has queued up and then releases the waiting requests. Per
tenant, a batch is one INSERT chained onto the head this replica last saw; a
unique index on (tenant, prev_hash) refuses forks, so a replica whose head is
stale re-reads it and retries (no lock, one round trip per batch instead of
five per request). Each request still gets its answer only after its entry
is committed.

An entry is written before the response leaves; if it can't be, the request
fails with ``storage_error``. Each entry's hash covers the previous entry's
hash and its own canonical content, so editing or deleting a row breaks the
chain at that row (``verify`` names it). Sensitive request fields (a secret's
value, a revoked token) are stored only as HMAC-SHA256 under a key derived
per tenant from a sealed master key, so "was this value used?" can be asked
(``match``) without the value being stored. Plain ``notes`` (an access
decision's comment, which policy it was about) are kept as written under
``fields.notes``: nothing secret goes there, and ``match`` never looks in them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.failures import statement_refused
from shared.groups import Groups

MAX_BATCH = 500
GENESIS = b"\x00" * 32
_INSERT = ("INSERT INTO audit_log (tenant_id, at, identity_id, action, resource, outcome, status, client_ip,"
           " request_id, fields, listener, prev_hash, hash)"
           " SELECT $1, at, identity_id, action, resource, outcome, status, client_ip, request_id, fields,"
           " listener, prev_hash, hash FROM unnest($2::timestamptz[], $3::text[], $4::text[], $5::text[],"
           " $6::text[], $7::int[], $8::text[], $9::text[], $10::jsonb[], $11::text[], $12::bytea[], $13::bytea[])"
           " WITH ORDINALITY AS e(at, identity_id, action, resource, outcome, status, client_ip, request_id, fields,"
           " listener, prev_hash, hash, n) ORDER BY n")
_COLUMNS = ("seq, tenant_id, at, identity_id, action, resource, outcome, status, client_ip, request_id, fields,"
            " listener, prev_hash, hash")
#: the main API's door: entries through it hash as they did before there were other doors
MAIN_LISTENER = "api"


def _canonical(entry: dict[str, Any]) -> bytes:
    body = {k: entry[k] for k in ("tenant_id", "identity_id", "action", "resource", "outcome", "status",
                                  "client_ip", "request_id", "fields")}
    body["at"] = entry["at"].astimezone(UTC).isoformat()
    if entry.get("listener", MAIN_LISTENER) != MAIN_LISTENER:  # the door is covered by the hash, too
        body["listener"] = entry["listener"]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev: bytes, entry: dict[str, Any]) -> bytes:
    return hashlib.sha256(prev + _canonical(entry)).digest()


def view(row: Any) -> dict[str, Any]:
    return {"seq": row["seq"], "at": row["at"], "identity_id": row["identity_id"],
            "action": row["action"], "resource": row["resource"], "outcome": row["outcome"],
            "status": row["status"], "client_ip": row["client_ip"], "request_id": row["request_id"],
            "fields": row["fields"], "listener": row["listener"], "hash": row["hash"].hex()}


class AuditLog:
    def __init__(self, pool: asyncpg.Pool, master_key: bytes) -> None:
        self.pool = pool
        self._master = master_key
        # group commit (shared/groups.py); a batch the database refuses is appended again entry by entry,
        # so one bad entry fails only its own request
        self._batches: Groups[dict[str, Any], None] = Groups(self._append_all, name="audit", max_group=MAX_BATCH,
                                                             retry_alone=statement_refused)
        self._heads: dict[str, bytes] = {}  # tenant -> hash of the last entry this replica saw

    async def close(self) -> None:
        await self._batches.close()

    def field_mac(self, tenant_id: str, value: str) -> str:
        """HMAC-SHA256 of a sensitive value under the tenant's audit key (hex)."""
        key = hmac.new(self._master, b"audit-field|" + tenant_id.encode(), hashlib.sha256).digest()
        return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    async def record(self, *, tenant_id: str, identity_id: str | None, action: str, resource: str,
                     outcome: str, status: int, client_ip: str | None, request_id: str,
                     sensitive: dict[str, str] | None = None, notes: dict[str, str] | None = None,
                     listener: str = MAIN_LISTENER) -> None:
        fields: dict[str, Any] = {k: self.field_mac(tenant_id, v) for k, v in (sensitive or {}).items()}
        if notes:
            fields["notes"] = {k: _text(v) for k, v in notes.items()}
        await self._batches.add({
            "tenant_id": tenant_id, "identity_id": identity_id, "action": _text(action[:300]),
            "resource": _text(resource[:600]),
            "outcome": outcome, "status": status, "client_ip": client_ip, "request_id": request_id,
            "fields": fields, "listener": listener, "at": datetime.now(UTC),
        })

    async def _append_all(self, entries: list[dict[str, Any]]) -> list[None]:
        await self._append(entries)
        return [None] * len(entries)

    async def _append(self, entries: list[dict[str, Any]]) -> None:
        by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for entry in entries:
            by_tenant[entry["tenant_id"]].append(entry)
        for tenant_id, group in by_tenant.items():
            await self._append_chained(tenant_id, group)

    async def _append_chained(self, tenant_id: str, group: list[dict[str, Any]]) -> None:
        """Chain ``group`` onto the tenant's head in one INSERT; on a fork, re-read the head and retry.

        The unique (tenant_id, prev_hash) index refuses a second successor of
        any entry, so a writer whose head is stale (another replica appended
        meanwhile) fails as a whole and nothing forks. A row can only link to an
        entry already committed, so chain order is also ``seq`` order.
        """
        for _ in range(100):
            head = self._heads.get(tenant_id)
            if head is None:
                head = await self.pool.fetchval(
                    "SELECT hash FROM audit_log WHERE tenant_id = $1 ORDER BY seq DESC LIMIT 1", tenant_id)
                head = bytes(head) if head is not None else GENESIS
            prev, links, hashes = head, [], []
            for e in group:
                links.append(prev)
                prev = chain_hash(prev, e)
                hashes.append(prev)
            try:
                await self.pool.execute(_INSERT, tenant_id, [e["at"] for e in group],
                                        [e["identity_id"] for e in group], [e["action"] for e in group],
                                        [e["resource"] for e in group], [e["outcome"] for e in group],
                                        [e["status"] for e in group], [e["client_ip"] for e in group],
                                        [e["request_id"] for e in group], [e["fields"] for e in group],
                                        [e["listener"] for e in group], links, hashes)
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "audit_log_chain_link":
                    raise
                self._heads.pop(tenant_id, None)  # another writer appended: read the head again
                continue
            except Exception:
                self._heads.pop(tenant_id, None)
                raise
            self._heads[tenant_id] = prev
            return
        raise RuntimeError("audit chain: too many concurrent appends")

    async def events(self, tenant_id: str, *, identity_id: str | None, path_prefix: str | None,
                     code: str | None, since: datetime | None, until: datetime | None,
                     after: int | None, limit: int, field_mac: str | None = None,
                     through: int | None = None) -> list[Any]:
        """Up to ``limit`` entries after seq ``after`` (and up to seq ``through``, when given) that pass the
        filters, in ``seq`` order."""
        return await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM audit_log WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR identity_id = $2) AND ($3::text IS NULL OR starts_with(resource, $3))"
            " AND ($4::text IS NULL OR outcome = $4) AND ($5::timestamptz IS NULL OR at >= $5)"
            " AND ($6::timestamptz IS NULL OR at < $6) AND ($7::bigint IS NULL OR seq > $7)"
            " AND ($9::text IS NULL OR (fields - 'notes')::text LIKE '%' || $9 || '%')"
            " AND ($10::bigint IS NULL OR seq <= $10)"
            " ORDER BY seq LIMIT $8",
            tenant_id, identity_id, path_prefix, code, since, until, after, limit, field_mac, through)

    async def window(self, tenant_id: str, after: int | None, rows: int) -> tuple[int | None, bool]:
        """The next ``rows`` entries of the tenant's log after seq ``after``, whatever they hold: the seq of
        the last of them (``None``: fewer are left, the window reaches the log's end) and whether any follow.

        Only the log's own order decides it (no filter, no value), so a scan bounded by it, and a cursor
        resuming after it, say nothing about what the entries in it hold.
        """
        found = await self.pool.fetch(
            "SELECT seq FROM audit_log WHERE tenant_id = $1 AND ($2::bigint IS NULL OR seq > $2)"
            " ORDER BY seq OFFSET $3 LIMIT 2", tenant_id, after, rows - 1)
        if not found:
            return None, False
        return found[0]["seq"], len(found) > 1

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


def _text(value: str) -> str:
    """What a caller put in a URL, storable as PostgreSQL text: NUL and lone surrogates escaped."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
