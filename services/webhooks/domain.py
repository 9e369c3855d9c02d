"""Webhook rules without I/O: secrets, Standard Webhooks signatures, matching, retry timing, what an attempt
keeps of the answer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from collections.abc import Mapping
from typing import Any

from shared.event_filter import matches
from shared.reach import COULD_NOT_CONNECT

SECRET_PREFIX = "whsec_"
#: what an attempt keeps of a public receiver's answer: enough to debug, too little to read a resource through
MAX_RESPONSE_BODY = 1024
#: the answer's headers an attempt keeps (a bounded set: no cookies, no server banners), each value cut here
KEPT_HEADERS = ("content-type", "retry-after")
MAX_HEADER_VALUE = 200
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
    """Event type globs (AMQP-style: ``secret.*``, ``#``) and an optional glob on ``data.path``
    (``shared.event_filter.matches``: event streams apply the same rule)."""
    return matches(event_types, path_pattern, event["type"], event.get("data", {}))


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


def body_budget(public: bool) -> int:
    """How many bytes of the answer's body to read off the socket: ``MAX_RESPONSE_BODY`` from a receiver
    reached at public addresses only; none from one reached through the operator's private allow-list
    (a webhook must not become a way to read the operator's internal services)."""
    return MAX_RESPONSE_BODY if public else 0


def kept_body(raw: bytes, public: bool) -> str | None:
    """The body an attempt records: at most ``MAX_RESPONSE_BODY`` bytes, and none when not ``public``."""
    if not public:
        return None
    return raw[:MAX_RESPONSE_BODY].decode("utf-8", "replace")


def shown_body(stored: str | None) -> str | None:
    """A stored body as the API shows it: never more than ``MAX_RESPONSE_BODY`` bytes (rows written before
    the cap held up to 64 KiB)."""
    if stored is None or len(stored) <= MAX_RESPONSE_BODY // 4:
        return stored
    raw = stored.encode()
    return stored if len(raw) <= MAX_RESPONSE_BODY else raw[:MAX_RESPONSE_BODY].decode("utf-8", "ignore")


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The ``KEPT_HEADERS`` of an answer, values cut to ``MAX_HEADER_VALUE`` printable characters."""
    kept = {}
    for name in KEPT_HEADERS:
        value = headers.get(name)
        if value is not None:
            kept[name] = "".join(c for c in value if c.isprintable())[:MAX_HEADER_VALUE]
    return kept


def no_answer(timed_out: bool, public: bool) -> tuple[str, str | None]:
    """(error code, text) of an attempt that got no HTTP answer.

    Refused, reset, closed at once, TLS failed or silent read alike — ``webhook_delivery_failed``, "could not
    connect" — or the error would tell closed, open and silent ports of the operator's networks apart. Only a
    receiver at public addresses gets ``webhook_delivery_timeout`` for one that did not answer in time."""
    if timed_out and public:
        return "webhook_delivery_timeout", None
    return "webhook_delivery_failed", COULD_NOT_CONNECT

