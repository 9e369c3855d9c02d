"""Waiting between ``make bench`` scenarios until the platform is quiet again."""

from __future__ import annotations

import asyncio
import subprocess
import time

import asyncpg


async def settle(dsn: str, mode: str, vhost: str | None, timeout: float = 120) -> None:
    """Wait until the last scenario's events have left every outbox (and, on RabbitMQ, every queue), so
    each scenario starts on quiet services: thousands of certificate.issued events still being relayed
    and consumed would weigh on the next one."""
    conn = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        schemas = [r["nspname"] for r in await conn.fetch(
            "SELECT nspname FROM pg_namespace n JOIN pg_class c ON c.relnamespace = n.oid WHERE c.relname = 'outbox'")]
        while time.monotonic() - started < timeout:
            counts = [await conn.fetchval(f'SELECT count(*) FROM "{s}".outbox WHERE sent_at IS NULL') for s in schemas]
            if not any(counts) and (vhost is None or not _queued(vhost)):
                break
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    if time.monotonic() - started > 1:
        print(f"bench: {mode}: waited {time.monotonic() - started:.0f}s for the outboxes to drain", flush=True)
    await asyncio.sleep(1)


def _queued(vhost: str) -> int:
    out = subprocess.run(["rabbitmqctl", "list_queues", "-p", vhost, "messages", "--no-table-headers", "--quiet"],
                         capture_output=True, text=True).stdout
    return sum(int(n) for n in out.split() if n.isdigit())
