"""A bench section's own embedded platform: a fresh database and data directory, started, removed after."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg

from bench.seals import PG_ADMIN, SealStack


@contextlib.asynccontextmanager
async def embedded_stack(section: str, session: aiohttp.ClientSession,
                         extra_env: dict[str, str]) -> AsyncIterator[tuple[SealStack, str]]:
    """One embedded platform (the file seal) on a database and a data directory of its own, started and
    healthy: the stack and its database's DSN. Stopped, and both removed, after the block."""
    db = f"coffer_bench_{section}_{secrets.token_hex(3)}"
    dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}"
    work = Path(tempfile.mkdtemp(prefix=f"coffer-bench-{section}-"))
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{db}"')
    finally:
        await admin.close()
    stack = SealStack("file", dsn, work / "data", extra_env)
    try:
        await stack.start()
        await stack.healthy(session)
        yield stack, dsn
    finally:
        await stack.stop()
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await admin.close()
        shutil.rmtree(work, ignore_errors=True)
