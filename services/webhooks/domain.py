"""Webhook rules without I/O: secrets, Standard Webhooks signatures, matching, retry timing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from typing import Any

from shared.bus import topic_matches
from shared.globs import glob_matches

SECRET_PREFIX = "whsec_"
MAX_RESPONSE_BODY = 64 * 1024
DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
MAX_RETRY_AFTER = 86400.0


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    content = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(secret_key(secret), content, hashlib.sha256).digest()).decode()


def signature_header(secrets_in_force: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """One signature per secret in force (two during a rotation's overlap), space-separated."""
    return " ".join(sign(s, message_id, timestamp, body) for s in secrets_in_force)


def subscription_matches(event_types: list[str], path_pattern: str | None, event: dict[str, Any]) -> bool:
    """Event type globs (AMQP-style: ``secret.*``, ``#``) and an optional glob on ``data.path``."""
    if not any(topic_matches(t, event["type"]) for t in event_types):
        return False
    if path_pattern is None:
        return True
    path = event.get("data", {}).get("path")
    return isinstance(path, str) and glob_matches(path_pattern, path)


def next_delay(schedule: tuple[float, ...], attempt: int, retry_after: float | None,
               rng: random.Random | None = None) -> float | None:
    """Seconds until attempt number ``attempt + 1`` (``None``: the schedule is used up).

    ``attempt`` attempts were made. Each step has ±20 % jitter; a receiver's
    ``Retry-After`` (429/503) is honoured when it asks for longer.
    """
    if attempt >= len(schedule):
        return None
    base = schedule[attempt]
    delay = base * (rng or random).uniform(0.8, 1.2) if base else 0.0
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def parse_retry_after(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def truncate_body(body: bytes) -> str:
    return body[:MAX_RESPONSE_BODY].decode("utf-8", "replace")

