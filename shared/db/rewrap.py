"""KEK rotation without a handler per service: each service lists where it keeps sealed values.

A service names its sealed columns in its ``ServiceSpec`` (``SealedColumns``:
the table, the key that orders its rows, the column prefix, and the
associated data a row's value is bound to); on ``<service>.rewrap`` the
runtime re-wraps every data key not under the active KEK, batch by batch,
without touching a ciphertext. A row whose data key does not open (damaged,
or moved to where its associated data no longer holds) is counted, logged by
place, left as it is, and does not stop the rotation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog

from shared.crypto import Sealed, rewrap
from shared.errors import EncryptionError

if TYPE_CHECKING:
    from shared.keyring import ServiceKeyring

log = structlog.get_logger("coffer.db.rewrap")


@dataclass(frozen=True)
class SealedColumns:
    """Sealed values in ``table``: ``<prefix>kek_id``, ``<prefix>wrapped_key``, ``<prefix>nonce``,
    ``<prefix>ciphertext``; rows ordered by ``key``; ``aad(row)`` what each is bound to (from ``key``
    and ``columns``)."""

    table: str
    key: tuple[str, ...]
    aad: Callable[[Mapping[str, Any]], bytes]
    prefix: str = ""
    columns: tuple[str, ...] = ()
    #: the tenant a row's value belongs to (sealed under that tenant's KEK); ``None``: the service's own
    tenant: Callable[[Mapping[str, Any]], str] | None = None


def by_tenant_id(row: Mapping[str, Any]) -> str:
    """``SealedColumns.tenant`` of a table whose rows name their tenant in ``tenant_id``."""
    return str(row["tenant_id"])


async def legacy_count(pool: asyncpg.Pool, places: Sequence[SealedColumns]) -> int:
    """How many values of ``places`` are still sealed under the root keyring (before the hierarchy)."""
    total = 0
    for place in places:
        kek = f"{place.prefix}kek_id"
        total += await pool.fetchval(f'SELECT count(*) FROM "{place.table}" WHERE "{kek}" LIKE $1', r"kek\_%")
    return total


async def has_legacy(pool: asyncpg.Pool, places: Sequence[SealedColumns]) -> bool:
    """Whether any value of ``places`` is still sealed under the root keyring (before the hierarchy)."""
    for place in places:
        kek = f"{place.prefix}kek_id"
        if await pool.fetchval(f'SELECT EXISTS (SELECT 1 FROM "{place.table}" WHERE "{kek}" LIKE $1)', r"kek\_%"):
            return True
    return False


async def rewrap_all(pool: asyncpg.Pool, kms: ServiceKeyring, places: Sequence[SealedColumns],
                     batch: int = 500, *, only_legacy: bool = False) -> tuple[int, int]:
    """Re-wrap every data key of ``places`` not under an active KEK of the service's keyring (its own, or
    its tenant's): ``(moved, unreadable)``. ``only_legacy``: only those still under the root keyring
    (sealed before the hierarchy), as every start does."""
    moved = unreadable = 0
    for place in places:
        m, u = await _rewrap_place(pool, kms, place, batch, only_legacy)
        moved, unreadable = moved + m, unreadable + u
    return moved, unreadable


async def _rewrap_place(pool: asyncpg.Pool, kms: ServiceKeyring, place: SealedColumns, batch: int,
                        only_legacy: bool) -> tuple[int, int]:
    p, key = place.prefix, place.key
    kek, wrapped, nonce, ciphertext = f"{p}kek_id", f"{p}wrapped_key", f"{p}nonce", f"{p}ciphertext"
    keys = ", ".join(f'"{k}"' for k in key)
    params = ", ".join(f"${i + 2}" for i in range(len(key)))
    select = (f'SELECT {", ".join(dict.fromkeys((*key, *place.columns)))}, "{kek}" AS kek, "{wrapped}" AS wrapped,'
              f' "{nonce}" AS nonce, "{ciphertext}" AS ciphertext FROM "{place.table}"'
              f' WHERE "{kek}" IS NOT NULL AND '
              + (f'"{kek}" LIKE $1' if only_legacy else f'"{kek}" <> ALL($1::text[])'))
    update = (f'UPDATE "{place.table}" SET "{kek}" = $1, "{wrapped}" = $2 WHERE '
              + " AND ".join(f'"{k}" = ${i + 3}' for i, k in enumerate(key)))
    moved = unreadable = 0
    after: tuple[Any, ...] | None = None
    active: Any = r"kek\_%" if only_legacy else list(kms.active_ids())
    while True:
        async with pool.acquire() as conn, conn.transaction():
            resume = f" AND ({keys}) > ({params})" if after is not None else ""
            rows = await conn.fetch(f"{select}{resume} ORDER BY {keys} LIMIT {batch} FOR UPDATE",
                                    active, *(after or ()))
            for row in rows:
                try:
                    owner = kms.tenant(place.tenant(row)) if place.tenant is not None else kms
                    fresh = rewrap(owner, Sealed(row["kek"], row["wrapped"], row["nonce"], row["ciphertext"]),
                                   place.aad(row))
                except EncryptionError:
                    unreadable += 1
                    log.error("rewrap_unreadable", table=place.table, key={k: str(row[k]) for k in key},
                              kek_id=row["kek"])
                    continue
                await conn.execute(update, fresh.kek_id, fresh.wrapped_key, *(row[k] for k in key))
                moved += 1
        if len(rows) < batch:
            return moved, unreadable
        after = tuple(rows[-1][k] for k in key)
