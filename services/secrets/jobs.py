"""Lifecycle jobs of the secrets service: expiry events and the retention purge.

Every replica runs them; each batch is claimed with ``FOR UPDATE SKIP LOCKED``
so a secret is handled once across replicas, and the events go through the
outbox in the same transaction.
"""

from __future__ import annotations

import asyncio

import structlog

from services.secrets.repository import SecretsRepository

log = structlog.get_logger("coffer.secrets.jobs")
BATCH = 100


async def run_lifecycle(repo: SecretsRepository, interval: float) -> None:
    """Forever: publish expiries, purge what retention released; sleep when idle."""
    while True:
        busy = False
        try:
            expired = await repo.publish_expired(BATCH)
            purged = await repo.purge_due(BATCH)
            if expired or purged:
                log.info("secrets_lifecycle", expired=expired, purged=purged)
            busy = expired == BATCH or purged == BATCH
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the database may be away: try again later
            log.warning("secrets_lifecycle_failed", error=type(exc).__name__)
        if not busy:
            await asyncio.sleep(interval)
