"""Named random keys, sealed by the KMS in the service's ``sealed_keys`` table.

The first replica to ask creates the key; every replica then reads the same
one. Associated data ``<schema>/sealed-key/<name>`` binds a row to its name.
"""

from __future__ import annotations

import secrets

import asyncpg

from shared.crypto import KmsProvider, Sealed, rewrap, seal, unseal


def _aad(schema: str, name: str) -> bytes:
    return f"{schema}/sealed-key/{name}".encode()


async def ensure_key(pool: asyncpg.Pool, kms: KmsProvider, schema: str, name: str) -> bytes:
    """The key called ``name`` (32 random bytes), created on first use."""
    fresh = seal(kms, secrets.token_bytes(32), _aad(schema, name))
    await pool.execute(
        "INSERT INTO sealed_keys (name, kek_id, wrapped_key, nonce, ciphertext)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
        name, fresh.kek_id, fresh.wrapped_key, fresh.nonce, fresh.ciphertext,
    )
    row = await pool.fetchrow(
        "SELECT kek_id, wrapped_key, nonce, ciphertext FROM sealed_keys WHERE name = $1", name
    )
    return unseal(kms, Sealed(*row), _aad(schema, name))


async def rewrap_all(conn: asyncpg.Connection, kms: KmsProvider, schema: str) -> int:
    """Re-wrap every sealed key's data key under the active KEK; returns how many moved."""
    rows = await conn.fetch(
        "SELECT name, kek_id, wrapped_key, nonce, ciphertext FROM sealed_keys"
        " WHERE kek_id <> $1 FOR UPDATE", kms.active_key_id,
    )
    for row in rows:
        moved = rewrap(kms, Sealed(row["kek_id"], row["wrapped_key"], row["nonce"], row["ciphertext"]),
                       _aad(schema, row["name"]))
        await conn.execute(
            "UPDATE sealed_keys SET kek_id = $2, wrapped_key = $3 WHERE name = $1",
            row["name"], moved.kek_id, moved.wrapped_key,
        )
    return len(rows)
