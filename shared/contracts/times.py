"""How every answer writes a moment: RFC 3339 in UTC with ``Z`` (``2026-11-25T10:00:00Z``, fractions of a
second when there are some).

Answers come out of two serializers, and both write moments this one way:

- contract models (what the services answer, sent on by the gateway as they are): pydantic's serializer,
  which writes a UTC datetime with ``Z``; every moment a service answers is UTC (PostgreSQL's ``timestamptz``
  reads back in UTC, and the services' own clocks are ``datetime.now(UTC)``);
- every other answer (the gateway's own: identities, tenants, policies, bindings, audit entries, whoami,
  errors' ``details``): ``answer_json``, which writes any datetime through ``rfc3339`` (another zone is
  converted, a naive one is taken as UTC). So a view hands it datetimes, never its own strings.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

import orjson


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC, RFC 3339 with ``Z``; a naive datetime is taken as UTC."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return utc.replace(tzinfo=None).isoformat() + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, (date, time)):  # a day or a time of day: as orjson itself writes them
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def answer_json(data: Any) -> bytes:
    """``data`` as an answer's JSON (orjson), every datetime in it written by ``rfc3339``."""
    return orjson.dumps(data, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
