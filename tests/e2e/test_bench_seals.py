"""``make bench``'s seal section runs (issue #29): ``python -m bench.run --only seals --seals-short``.

A smoke run, not a measurement: one row per seal (file, shamir, awskms on moto, pkcs11 on SoftHSM2) with
positive reads and writes per second and their ratios to ``file``, an unseal time for every seal but
``file``, and no failed request. No timing threshold: the figures of a 1-second run on a test machine say
nothing about the targets.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.seals import SEALS, SOFTHSM_LIBRARY
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.long,
    pytest.mark.skipif(not shutil.which("wrk"), reason="needs wrk (Debian package wrk): `make bench` installs it"),
    pytest.mark.skipif(not (Path(SOFTHSM_LIBRARY).exists() and shutil.which("softhsm2-util")),
                       reason="needs SoftHSM2 (Debian package softhsm2): make test installs it"),
]


def table_rows(output: str) -> dict[str, list[str]]:
    """The seal table's rows, by seal: its cells."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in SEALS:
            rows[cells[0]] = cells
    return rows


@pytest.mark.timeout(240)
def test_the_short_seal_bench_has_a_row_per_seal() -> None:
    before = set((ROOT / "bench" / "results").glob("seals-*.json"))
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--only", "seals", "--seals-short"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=220)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| seal |"))
    assert [c.strip() for c in header.strip("|").split("|")][:6] == [
        "seal", "read/s", "× file read", "write/s", "× file write", "unseal ms"], header
    rows = table_rows(proc.stdout)
    assert sorted(rows) == sorted(SEALS), proc.stdout
    for seal, cells in rows.items():
        read, read_ratio, write, write_ratio, unseal = cells[1:6]
        assert float(read) > 0 and float(write) > 0, cells
        assert float(read_ratio) > 0 and float(write_ratio) > 0, cells
        if seal == "file":
            assert (float(read_ratio), float(write_ratio), unseal) == (1.0, 1.0, "-"), cells
        else:
            assert float(unseal.split()[0]) > 0, cells
        assert cells[-1] == "0", f"failed requests: {cells}"
    # and the JSON beside it, for whoever compares runs
    written = set((ROOT / "bench" / "results").glob("seals-*.json")) - before
    assert len(written) == 1, written
    doc = json.loads(written.pop().read_text())
    by_seal = {r["seal"]: r for r in doc["seals"]}
    assert sorted(by_seal) == sorted(SEALS)
    for seal in ("awskms", "pkcs11"):
        assert by_seal[seal]["attempt_ms"] > 0 and all(s["unseal_ms"] > 0 for s in by_seal[seal]["starts"])
