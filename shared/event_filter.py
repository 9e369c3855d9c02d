"""Which events a listener asked for: the one rule of webhook subscriptions and event streams.

What a listener may *see* is the other half of the rule: the policy resource an event is about
(``shared.contracts.events.resource_of``) must be one its holder may ``list`` at that moment.
"""

from __future__ import annotations

from typing import Any

from shared.bus.base import topic_matches
from shared.globs import glob_matches


def matches(event_types: list[str] | tuple[str, ...], path_pattern: str | None, event_type: str,
            data: dict[str, Any]) -> bool:
    """Event type globs (AMQP-style: ``secret.*``, ``#``) and an optional glob on ``data.path``."""
    if not any(topic_matches(t, event_type) for t in event_types):
        return False
    if path_pattern is None:
        return True
    path = data.get("path")
    return isinstance(path, str) and glob_matches(path_pattern, path)
