"""Composition root of the ``lease`` service.

It answers ``lease.ping`` (bus + storage health) today; its API lands with its
own issue. The schema ``lease`` gets the shared outbox and inbox tables.
"""

from __future__ import annotations

from pathlib import Path

from shared.runtime import ServiceSpec

SPEC = ServiceSpec(name="lease", migrations=Path(__file__).parent / "migrations")
