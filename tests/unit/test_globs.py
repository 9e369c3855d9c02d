"""The glob matcher: the same answers as a plain dynamic-programming matcher, in bounded time.

``reference_match`` below is the obviously-correct (and slow) definition of a
glob: segment-wise DP, and inside a segment character-wise DP. The compiled
matcher of ``shared.globs`` must agree with it on every case, including the
pathological patterns that made the old backtracking regex take hours.
"""

from __future__ import annotations

import random
import re
import time
from functools import cache

import pytest

from shared.errors import InvalidGlob
from shared.globs import MAX_PATTERN, compile_glob, glob_matches


def _tokens(segment: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(segment):
        ch = segment[i]
        if ch == "[":
            end = segment.index("]", i + 1)
            out.append(("class", segment[i + 1:end]))
            i = end + 1
            continue
        out.append(("star", "") if ch == "*" else ("any", "") if ch == "?" else ("lit", ch))
        i += 1
    return out


def _in_class(body: str, ch: str) -> bool:
    negate = body.startswith("!")
    body = body.removeprefix("!")
    hit, i = False, 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            hit |= body[i] <= ch <= body[i + 2]
            i += 3
        else:
            hit |= body[i] == ch
            i += 1
    return hit != negate


def _segment_match(pattern: str, text: str) -> bool:
    toks = _tokens(pattern)

    @cache
    def m(i: int, j: int) -> bool:
        if i == len(toks):
            return j == len(text)
        kind, arg = toks[i]
        if kind == "star":
            return m(i + 1, j) or (j < len(text) and m(i, j + 1))
        if j == len(text):
            return False
        ok = (kind == "any") or (kind == "lit" and arg == text[j]) or (kind == "class" and _in_class(arg, text[j]))
        return ok and m(i + 1, j + 1)

    return m(0, 0)


def reference_match(pattern: str, path: str) -> bool:
    psegs, segs = pattern.split("/"), path.split("/")

    @cache
    def m(i: int, j: int) -> bool:
        if i == len(psegs):
            return j == len(segs)
        if psegs[i] == "**":
            return m(i + 1, j) or (j < len(segs) and m(i, j + 1))
        return j < len(segs) and _segment_match(psegs[i], segs[j]) and m(i + 1, j + 1)

    return m(0, 0)


# -- the meaning --------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("secrets/app/**", "secrets/app", True),
    ("secrets/app/**", "secrets/app/db/password", True),
    ("secrets/app/**", "secrets/apple", False),
    ("**/password", "password", True),
    ("**/password", "a/b/c/password", True),
    ("**/password", "a/b/c/password2", False),
    ("a/**/b", "a/b", True),
    ("a/**/b", "a/x/y/b", True),
    ("a/**/b", "a/x/y/c", False),
    ("a/*/c", "a/b/c", True),
    ("a/*/c", "a/b/x/c", False),
    ("a/*", "a/", True),  # '*' takes an empty segment too
    ("db-?", "db-1", True),
    ("db-?", "db-12", False),
    ("db-[0-9]", "db-7", True),
    ("db-[!0-9]", "db-7", False),
    ("db-[!0-9]", "db-x", True),
    ("*.key", "tls.key", True),
    ("*.key", "tls.keys", False),
    ("a*b*c", "abxbc", True),
    ("a*b*c", "acb", False),
    ("ab*ba", "aba", False),
    ("**", "anything/at/all", True),
    ("**/**/**", "x", True),
    ("a", "a/b", False),
    ("a/b", "a", False),
])
def test_meaning(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected
    assert reference_match(pattern, path) is expected


@pytest.mark.parametrize("pattern", [
    "", "a//b", "/a", "a/", "a**", "**b", "a/***/b", "[abc", "abc]", "[]", "[!]", "a[[b]c", "[z-a]",
    "a b", "ä", "a/%2e", "x" * (MAX_PATTERN + 1),
])
def test_malformed_patterns_are_invalid_glob(pattern: str) -> None:
    with pytest.raises(InvalidGlob):
        compile_glob(pattern)


def test_longest_pattern_is_accepted() -> None:
    pattern = "/".join(["a*"] * (MAX_PATTERN // 3)) + "/ab"
    assert len(pattern) <= MAX_PATTERN
    assert glob_matches(pattern, "/".join(["a"] * (MAX_PATTERN // 3)) + "/ab")


# -- agreement with the reference on random cases ---------------------------------------

_PIECES = ["a", "b", "ab", "*", "?", "[ab]", "[!a]", "a*", "*b", "a*b", "*a*", "?*", "[a-b]*"]


def _random_pattern(rng: random.Random) -> str:
    segments = []
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.3:
            segments.append("**")
        else:
            segment = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 3)))
            segments.append(re.sub(r"\*+", "*", segment))
    return "/".join(segments)


def _random_path(rng: random.Random) -> str:
    return "/".join("".join(rng.choice("ab") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 6)))


def test_agrees_with_the_reference_on_random_cases() -> None:
    rng = random.Random(20261126)
    disagreements = []
    for _ in range(20_000):
        pattern, path = _random_pattern(rng), _random_path(rng)
        if glob_matches(pattern, path) != reference_match(pattern, path):
            disagreements.append((pattern, path))
    assert not disagreements, disagreements[:10]


# -- pathological patterns: right answers, bounded work ----------------------------------

SIXTEEN = "/".join(["a" * 31 + "b"] * 15 + ["a" * 32])  # 16 segments of 32 characters
PATHOLOGICAL = [
    "/".join(["**"] * 20 + ["c"]),                      # hours with the backtracking regex
    "/".join(["**", "a*"] * 40 + ["c"]),                # '**' between many matching segments
    "/".join(["**/" + "a*" * 8 + "c"] * 6),             # stars inside segments, between '**'s
    "*a" * 60 + "c",                                    # one segment, 60 stars
    "/".join(["*a*a*a*a*a*a*a*b"] * 15 + ["*a*a*c"]),   # every segment nearly matches
    "**/" + "/".join(["a" * 31 + "?"] * 14) + "/c*",    # a long group that fails at its end
    "/".join(["**/" + "?" * 31 + "b"] * 13 + ["x"]),    # a group that matches everywhere, 13 times
]


@pytest.mark.parametrize("pattern", PATHOLOGICAL)
def test_pathological_patterns_agree_and_stay_bounded(pattern: str) -> None:
    assert len(pattern) <= MAX_PATTERN
    paths = [SIXTEEN, SIXTEEN.replace("b", "c"), "/".join(["a"] * 16), "/".join(["ab"] * 8 + ["c"] * 8)]
    expected = [reference_match(pattern, p) for p in paths]
    started = time.perf_counter()
    for _ in range(100):
        assert [glob_matches(pattern, p) for p in paths] == expected
    # 400 matches: the old matcher needed hours for the first row alone; this needs
    # milliseconds (bench/globs.py has the figures). The bound only catches a return
    # of exponential behaviour, not a slowdown.
    assert time.perf_counter() - started < 5.0
