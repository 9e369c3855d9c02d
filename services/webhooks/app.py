"""Composition root of the ``webhooks`` service.

It answers ``webhooks.ping`` (bus + storage health) today; its API lands with its
own issue. The schema ``webhooks`` gets the shared outbox and inbox tables.
"""

from __future__ import annotations

from pathlib import Path

from shared.runtime import ServiceSpec

SPEC = ServiceSpec(name="webhooks", migrations=Path(__file__).parent / "migrations")
