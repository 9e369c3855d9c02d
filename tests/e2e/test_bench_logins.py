"""``make bench``'s login section runs (issue #30): ``python -m bench.run --only logins --logins-short``.

A smoke run, not a measurement: one row per kind (client-secret, jwt RS256, jwt ES256) with positive logins
per second, latencies and ratios to client-secret, and no failed login. No timing threshold: the figures of
a 1-second run on a test machine say nothing about the 0.8 target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bench.logins import KINDS
from tests.conftest import ROOT

pytestmark = [pytest.mark.long,
              pytest.mark.skipif(not shutil.which("wrk"), reason="needs wrk (Debian wrk): make peers installs it")]


def table_rows(output: str) -> dict[str, list[str]]:
    """The login table's rows, by kind: its cells."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in KINDS:
            rows[cells[0]] = cells
    return rows


@pytest.mark.timeout(180)
def test_the_short_login_bench_has_a_row_per_kind() -> None:
    before = set((ROOT / "bench" / "results").glob("logins-*.json"))
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--only", "logins", "--logins-short"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=160)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| kind |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "kind", "logins/s", "× client-secret", "target", "p50 ms", "p99 ms", "rounds' spread", "errors",
        "platform CPU µs/login", "PostgreSQL CPU µs/login"], header
    rows = table_rows(proc.stdout)
    assert sorted(rows) == sorted(KINDS), proc.stdout
    for kind, cells in rows.items():
        rate, ratio, target, p50, p99 = cells[1:6]
        assert float(rate) > 0 and float(ratio) > 0 and float(p50) > 0 and float(p99) > 0, cells
        if kind == "client-secret":
            assert (float(ratio), target) == (1.0, "-"), cells
        else:
            assert target == "≥ 0.8", cells
        assert cells[7] == "0", f"failed logins: {cells}"
        assert int(cells[8]) > 0 and int(cells[9]) > 0, f"each login costs the platform and PostgreSQL CPU: {cells}"
    assert "targets: jwt RS256 " in proc.stdout and "; jwt ES256 " in proc.stdout, proc.stdout
    # and the JSON beside it, for whoever compares runs
    written = set((ROOT / "bench" / "results").glob("logins-*.json")) - before
    assert len(written) == 1, written
    doc = json.loads(written.pop().read_text())
    by_kind = {r["kind"]: r for r in doc["logins"]}
    assert sorted(by_kind) == sorted(KINDS)
    for row in by_kind.values():
        assert row["rps"] > 0 and row["requests"] > 0 and row["errors"] == 0, row
        assert row["ratio_client_secret"] > 0 and row["p50_ms"] > 0 and row["p99_ms"] > 0, row
        assert row["server_us"] > 0 and row["postgres_us"] > 0, row
