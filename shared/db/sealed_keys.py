"""Named random keys, sealed by the KMS in the service's ``sealed_keys`` table.

The first replica to ask creates the key; every replica then reads the same
one. Associated data ``<schema>/sealed-key/<name>`` binds a row to its name.
"""

from __future__ import annotations

import secrets

import asyncpg

from shared.crypto import KmsProvider, Sealed, seal, unseal
from shared.db.rewrap import SealedColumns


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


async def existing_key(pool: asyncpg.Pool, kms: KmsProvider, schema: str, name: str) -> bytes | None:
    """The key called ``name`` if there is one (``EncryptionError`` if ``kms`` can't open it); never makes one."""
    row = await pool.fetchrow("SELECT kek_id, wrapped_key, nonce, ciphertext FROM sealed_keys WHERE name = $1", name)
    return None if row is None else unseal(kms, Sealed(*row), _aad(schema, name))


def sealed_columns(schema: str) -> SealedColumns:
    """Where the named keys are, for KEK rotation (``shared.db.rewrap``): every service has them."""
    return SealedColumns("sealed_keys", key=("name",), aad=lambda row: _aad(schema, row["name"]))
