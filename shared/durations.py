"""Duration strings of the API: one or more ``<int><unit>``, units ``s m h d w``."""

from __future__ import annotations

import re

from shared.errors import InvalidDuration

_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WHOLE = re.compile(r"^(?:[0-9]{1,12}[smhdw]){1,5}$")
_PART = re.compile(r"([0-9]+)([smhdw])")
#: nothing in Coffer lives longer than this (100 years).
MAX_SECONDS = 100 * 365 * 86400


def parse_duration(text: object, *, field: str = "ttl", allow_zero: bool = False) -> int:
    """Seconds in ``text`` (``90s``, ``1h30m``, ``30d``); ``invalid_duration`` otherwise."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise InvalidDuration(
            f"'{field}' must be a duration like 90s, 15m, 1h30m or 30d",
            details={"field": field},
        )
    seconds = sum(int(n) * _UNIT[u] for n, u in _PART.findall(text))
    if seconds > MAX_SECONDS:
        raise InvalidDuration(f"'{field}' is longer than 100 years", details={"field": field})
    if seconds == 0 and not allow_zero:
        raise InvalidDuration(f"'{field}' must be longer than zero", details={"field": field})
    return seconds
