"""structlog set-up: JSON lines, the request id in every line, redaction.

Redaction is the second line of defence: code must not log secrets at all.
The processor blanks values under sensitive keys and anything shaped like a
bearer token / JWT / webhook secret inside any string.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

REDACTED = "[redacted]"
SENSITIVE_KEYS = frozenset(
    {
        "value", "password", "secret", "client_secret", "token", "access_token",
        "refresh_token", "private_key", "authorization", "tsig_secret", "totp_code",
        "api_key", "data_key", "kek", "connection_url", "database_url", "amqp_url",
        "dsn", "cookie", "otpauth_uri",
    }
)
_TOKENISH = re.compile(
    r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"  # JWT
    r"|whsec_[A-Za-z0-9+/=]{8,}"  # webhook secret
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]+=*"  # Authorization value
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password in URLs
)


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return _TOKENISH.sub(REDACTED, value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in SENSITIVE_KEYS else _scrub(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v, depth + 1) for v in value)
    return value


def redact(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: blank sensitive keys, mask token-shaped substrings."""
    for key in list(event_dict):
        if key.lower() in SENSITIVE_KEYS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def format_exc_frames(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """``format_exc_info`` without the exception's message: the type and the frames only.

    Exception texts quote runtime values (asyncpg's ``DataError`` quotes query
    arguments, which may be a secret being written), and the redaction
    processor can't know every shape a value takes. The frames (file, line,
    source) hold no runtime values.
    """
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    elif not isinstance(exc_info, tuple):
        exc_info = sys.exc_info()
    exc_type, _, tb = exc_info
    if exc_type is not None:
        event_dict["exception"] = (
            "".join(traceback.format_tb(tb)) + f"{exc_type.__module__}.{exc_type.__qualname__} (message withheld)"
        )
    return event_dict


PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    format_exc_frames,
    redact,
]


def configure(level: str = "info", fmt: str = "json") -> None:
    """Configure structlog for this process (call once, from a composition root)."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*PROCESSORS, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiormq, asyncpg, aiohttp) log through stdlib: keep them quiet and redacted.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    # The bus logs its own connection state (amqp_connect_failed, ...); aiormq's
    # tracebacks for the same events are noise.
    for noisy in ("aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
