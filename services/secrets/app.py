"""Composition root of the ``secrets`` service.

It answers ``secrets.ping`` (bus + storage health) today; its API lands with its
own issue. The schema ``secrets`` gets the shared outbox and inbox tables.
"""

from __future__ import annotations

from pathlib import Path

from shared.runtime import ServiceSpec

SPEC = ServiceSpec(name="secrets", migrations=Path(__file__).parent / "migrations")
