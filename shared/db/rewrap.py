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
from typing import Any

import asyncpg
import structlog

from shared.crypto import KmsProvider, Sealed, rewrap
from shared.errors import EncryptionError

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


async def rewrap_all(pool: asyncpg.Pool, kms: KmsProvider, places: Sequence[SealedColumns],
                     batch: int = 500) -> tuple[int, int]:
    """Re-wrap every data key of ``places`` not under the active KEK: ``(moved, unreadable)``."""
    moved = unreadable = 0
    for place in places:
        m, u = await _rewrap_place(pool, kms, place, batch)
        moved, unreadable = moved + m, unreadable + u
    return moved, unreadable


async def _rewrap_place(pool: asyncpg.Pool, kms: KmsProvider, place: SealedColumns, batch: int) -> tuple[int, int]:
    p, key = place.prefix, place.key
    kek, wrapped, nonce, ciphertext = f"{p}kek_id", f"{p}wrapped_key", f"{p}nonce", f"{p}ciphertext"
    keys = ", ".join(f'"{k}"' for k in key)
    params = ", ".join(f"${i + 2}" for i in range(len(key)))
    select = (f'SELECT {", ".join(dict.fromkeys((*key, *place.columns)))}, "{kek}" AS kek, "{wrapped}" AS wrapped,'
              f' "{nonce}" AS nonce, "{ciphertext}" AS ciphertext FROM "{place.table}"'
              f' WHERE "{kek}" IS NOT NULL AND "{kek}" <> $1')
    update = (f'UPDATE "{place.table}" SET "{kek}" = $1, "{wrapped}" = $2 WHERE '
              + " AND ".join(f'"{k}" = ${i + 3}' for i, k in enumerate(key)))
    moved = unreadable = 0
    after: tuple[Any, ...] | None = None
    active = kms.active_key_id
    while True:
        async with pool.acquire() as conn, conn.transaction():
            resume = f" AND ({keys}) > ({params})" if after is not None else ""
            rows = await conn.fetch(f"{select}{resume} ORDER BY {keys} LIMIT {batch} FOR UPDATE",
                                    active, *(after or ()))
            for row in rows:
                try:
                    fresh = rewrap(kms, Sealed(row["kek"], row["wrapped"], row["nonce"], row["ciphertext"]),
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
