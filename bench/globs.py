"""The glob matcher's cost: µs per match, typical and worst patterns against a 16-segment path.

``python -m bench.globs`` prints the table; ``make bench`` prints it too. The
worst rows are the pathological patterns of tests/unit/test_globs.py (the
first made the old backtracking matcher take hours) and the worst a random
search over 512-character patterns found. Each row is the mean of many
matches in one process, after a warm-up (the compiled pattern is cached, as
it is in the gateway).
"""

from __future__ import annotations

import json
import time
from typing import Any

from shared.globs import compile_glob, glob_matches

SIXTEEN = "/".join(["a" * 31 + "b"] * 15 + ["a" * 32])  # 16 segments, 511 characters
ALL_A = "/".join(["a" * 32] * 16)  # the random-search worst is worst against this one
TYPICAL_PATH = "secrets/environments/production/db/password"

ROWS: list[tuple[str, str, str]] = [
    ("typical: secrets/environments/production/**", "secrets/environments/production/**", TYPICAL_PATH),
    ("typical: **/password", "**/password", TYPICAL_PATH),
    ("20 x '**' then 'c' (hours before)", "/".join(["**"] * 20 + ["c"]), SIXTEEN),
    ("'**' between 40 'a*' segments", "/".join(["**", "a*"] * 40 + ["c"]), SIXTEEN),
    ("6 groups of 8 stars between '**'s", "/".join(["**/" + "a*" * 8 + "c"] * 6), SIXTEEN),
    ("16 nearly matching star segments", "/".join(["*a*a*a*a*a*a*a*b"] * 15 + ["*a*a*c"]), SIXTEEN),
    ("a 14-segment group failing at its end", "**/" + "/".join(["a" * 31 + "?"] * 14) + "/c*", SIXTEEN),
    ("the worst a random search found",
     "**/**/a*aa?*a?*?a*?[ab][ab][!b]*a*a?/[!b]?[!b]*[ab][!b][!b]a?[ab][ab]a/*a?a??*a?*[!b]a?ba*[!b]aaa?*a"
     "a*bab*b/a?bba[ab]b?*aa?a*a?*[!b][!b]??*/[ab]*a??a??a*a*[!b][!b][ab]a*ab[!b]ba*[ab]a?[ab]/**/*a?*aa[!"
     "b]a*a*a[ab][ab]b[ab]?a*[ab][!b]??b[ab]ba?a?a*a*a*a?*/**/a*a[!b]a*a[!b]*b?*ba?*a[ab]a*a?a[ab]a?[!b]*a"
     "*a*aa[ab]a?a?[!b]?/**/[ab]b*aa?[!b]*aab?bab[!b][!b]baa[!b]?[!b]*?b?[ab]aa?b*a*a?/a?a?aab*a?a*?[ab][a"
     "b][!b]*a*[ab]a*a?a??a?[ab][!b]a?a*?aa*a*[ab]/*?*a/**/[!b]*aa*?b?a?a*a*ab[ab]aa*[!b][!b]bba", ALL_A),
]


def measure(repeat: int = 2000) -> list[dict[str, Any]]:
    rows = []
    for name, pattern, path in ROWS:
        compile_glob(pattern)
        for _ in range(50):
            glob_matches(pattern, path)
        started = time.perf_counter()
        for _ in range(repeat):
            glob_matches(pattern, path)
        us = (time.perf_counter() - started) / repeat * 1e6
        rows.append({"scenario": f"glob: {name}", "pattern_chars": len(pattern), "path_segments": path.count("/") + 1,
                     "us_per_match": round(us, 2)})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| glob pattern | pattern chars | path segments | µs per match |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario'].removeprefix('glob: ')} | {r['pattern_chars']} | {r['path_segments']} | "
              f"{r['us_per_match']} |")


if __name__ == "__main__":
    results = measure()
    print_table(results)
    print(json.dumps(results))
