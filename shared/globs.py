"""Path globs of policies and webhook subscriptions.

``*`` any characters within one segment, ``**`` (a whole segment) any number
of segments including none (``a/**`` matches ``a`` and everything under it),
``?`` one character, ``[abc]`` / ``[a-z]`` / ``[!abc]`` a class. Anything else
malformed is ``invalid_glob``.
"""

from __future__ import annotations

import re
from functools import lru_cache

from shared.errors import InvalidGlob

_SEGMENT_CHARS = re.compile(r"^[A-Za-z0-9._\-*?\[\]!]+$")


def _segment_regex(segment: str, pattern: str) -> str:
    out, i = [], 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            if segment[i:i + 2] == "**":
                raise InvalidGlob("'**' must be a whole path segment", details={"pattern": pattern})
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end = segment.find("]", i + 1)
            if end == -1:
                raise InvalidGlob("unclosed '[' in pattern", details={"pattern": pattern})
            body = segment[i + 1:end]
            negate = body.startswith("!")
            body = body.removeprefix("!")
            if not body or "[" in body:
                raise InvalidGlob("empty or nested character class", details={"pattern": pattern})
            if any(a > b for a, b in re.findall(r"(.)-(.)", body)):
                raise InvalidGlob("reversed range in character class", details={"pattern": pattern})
            escaped = "".join("\\" + c if c in "\\^" else c for c in body)
            out.append(f"[^/{escaped}]" if negate else f"[{escaped}]")
            i = end
        elif ch == "]":
            raise InvalidGlob("unmatched ']' in pattern", details={"pattern": pattern})
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regex of a path glob (to match against ``"/" + path``); ``invalid_glob`` when malformed."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > 600:
        raise InvalidGlob("pattern must be 1–600 characters", details={"pattern": str(pattern)[:600]})
    segments = pattern.split("/")
    if any(s == "" for s in segments):
        raise InvalidGlob("empty path segment in pattern", details={"pattern": pattern})
    # Matched against "/" + path: a segment is "/seg", "**" is any run of "/seg"s (none included),
    # so "a/**" matches "a" and everything under it, "**/x" matches "x" at any depth.
    parts: list[str] = []
    for seg in segments:
        if not _SEGMENT_CHARS.fullmatch(seg):
            raise InvalidGlob("pattern has characters no path has", details={"pattern": pattern})
        parts.append("(?:/[^/]+)*" if seg == "**" else "/" + _segment_regex(seg, pattern))
    return re.compile("".join(parts))


def glob_matches(pattern: str, path: str) -> bool:
    return compile_glob(pattern).fullmatch("/" + path) is not None
