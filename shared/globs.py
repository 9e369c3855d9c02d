"""Path globs: policy paths, webhook ``path_pattern``s, secret and rotation policies.

``*`` any characters within one segment, ``**`` (a whole segment) any number
of segments including none (``a/**`` matches ``a`` and everything under it),
``?`` one character, ``[abc]`` / ``[a-z]`` / ``[!abc]`` a class. Anything else
malformed is ``invalid_glob``; a pattern is at most 512 characters.

Matching costs O(len(path) × len(pattern)) whatever the pattern: a tenant's
glob must not stall the event loop every tenant shares. A glob compiles to a
regular expression in which nothing is tried twice:

- A segment ``c0*c1*…*cr`` (each ``ci`` a fixed-length run of literals, ``?``
  and classes) matches when ``c0`` is its prefix, each middle ``ci`` is found
  at its *leftmost* place after the previous one, and ``cr`` is its suffix.
  Taking the leftmost place is never wrong (a later one leaves less room for
  what follows), so each middle search is an atomic group ``(?>[^/]*?ci)``:
  once found it is never revisited.
- The same holds one level up: ``G0/**/G1/**/…/**/Gk`` (each ``Gi`` a run of
  segments) matches when ``G0`` starts the path, each middle ``Gi`` sits at
  its leftmost place, and ``Gk`` ends it; middle groups are atomic too.
- Every segment ends with a boundary look-ahead, so a committed group can't
  have stopped in the middle of a path segment.

Backtracking is therefore confined to one scan per middle chunk and one per
tail, instead of trying every way of splitting the path among the stars (the
backtracking regex this replaced took seconds for 12 ``**`` and hours for
20). ``tests/unit/test_globs.py`` checks it against a plain dynamic-programming
matcher on random and pathological patterns; ``bench/globs.py`` times the
worst ones.
"""

from __future__ import annotations

import re
from functools import lru_cache

from shared.errors import InvalidGlob

MAX_PATTERN = 512
_SEGMENT_CHARS = re.compile(r"^[A-Za-z0-9._\-*?\[\]!]+$")
_SEGMENT_END = "(?![^/])"  # at a '/' or at the end: the segment is whole
_ANY_SEGMENTS_LAZY = "(?:/[^/]*+)*?"  # possessive: a segment never gives characters back
_ANY_SEGMENTS = "(?:/[^/]*+)*"


def _invalid(message: str, pattern: str) -> InvalidGlob:
    return InvalidGlob(message, details={"pattern": pattern[:MAX_PATTERN]})


def _chunks(segment: str, pattern: str) -> list[str]:
    """The regex of each fixed-length run between the ``*``s of one segment."""
    chunks: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(segment):
        ch = segment[i]
        if ch == "*":
            if segment[i:i + 2] == "**":
                raise _invalid("'**' must be a whole path segment", pattern)
            chunks.append("".join(current))
            current = []
        elif ch == "?":
            current.append("[^/]")
        elif ch == "[":
            end = segment.find("]", i + 1)
            if end == -1:
                raise _invalid("unclosed '[' in pattern", pattern)
            body = segment[i + 1:end]
            negate = body.startswith("!")
            body = body.removeprefix("!")
            if not body or "[" in body:
                raise _invalid("empty or nested character class", pattern)
            if any(a > b for a, b in re.findall(r"(.)-(.)", body)):
                raise _invalid("reversed range in character class", pattern)
            escaped = "".join("\\" + c if c in "\\^" else c for c in body)
            current.append(f"[^/{escaped}]" if negate else f"[{escaped}]")
            i = end
        elif ch == "]":
            raise _invalid("unmatched ']' in pattern", pattern)
        else:
            current.append(re.escape(ch))
        i += 1
    chunks.append("".join(current))
    return chunks


def _segment(segment: str, pattern: str) -> str:
    """``/`` and one whole path segment."""
    first, *rest = _chunks(segment, pattern)
    if not rest:
        return "/" + first + _SEGMENT_END
    *middle, last = rest
    searches = "".join(f"(?>[^/]*?{chunk})" for chunk in middle)
    return f"/{first}{searches}[^/]*{last}{_SEGMENT_END}"


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regex of a path glob (to match against ``"/" + path``); ``invalid_glob`` when malformed."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise InvalidGlob(f"pattern must be 1–{MAX_PATTERN} characters",
                          details={"pattern": str(pattern)[:MAX_PATTERN]})
    groups: list[list[str]] = [[]]  # runs of segments between '**'s ('**/**' is one '**')
    for seg in pattern.split("/"):
        if seg == "":
            raise _invalid("empty path segment in pattern", pattern)
        if not _SEGMENT_CHARS.fullmatch(seg):
            raise _invalid("pattern has characters no path has", pattern)
        if seg == "**":
            if groups[-1] or len(groups) == 1:
                groups.append([])
            continue
        groups[-1].append(_segment(seg, pattern))
    head, *others = ["".join(g) for g in groups]
    if not others:
        return re.compile(head + r"\Z")
    *middle, tail = others
    searches = "".join(f"(?>{_ANY_SEGMENTS_LAZY}{group})" for group in middle)
    return re.compile(f"{head}{searches}{_ANY_SEGMENTS}{tail}" + r"\Z")


def glob_matches(pattern: str, path: str) -> bool:
    """Does ``path`` match ``pattern``? (``invalid_glob`` if the pattern is malformed.)"""
    return compile_glob(pattern).match("/" + path) is not None
