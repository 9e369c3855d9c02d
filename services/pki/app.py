"""Composition root of the ``pki`` service.

It answers ``pki.ping`` (bus + storage health) today; its API lands with its
own issue. The schema ``pki`` gets the shared outbox and inbox tables.
"""

from __future__ import annotations

from pathlib import Path

from shared.runtime import ServiceSpec

SPEC = ServiceSpec(name="pki", migrations=Path(__file__).parent / "migrations")
