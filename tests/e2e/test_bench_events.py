"""``make bench``'s event stream section runs (issue #31): ``python -m bench.run --only events --streams-short``.

A smoke run, not a measurement: a row without streams and a row with them, positive write rates, every event
of every stream received, a delay measured. No timing threshold: a 50-write run on a test machine says
nothing about the targets (p99 ≤ 250 ms, writes ≥ 0.9 × without streams).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.timeout(180)
def test_the_short_event_stream_bench_has_both_rows_and_every_event() -> None:
    before = set((ROOT / "bench" / "results").glob("events-*.json"))
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--only", "events", "--streams-short"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=160)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    header = next(line for line in proc.stdout.splitlines() if line.startswith("| run |"))
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "run", "writes/s", "× without streams", "write p50 ms", "write p99 ms", "event delay p50 ms",
        "event delay p99 ms", "events received", "platform CPU ms/write", "readers' CPU s"], header
    rows = {cells[0]: cells for line in proc.stdout.splitlines() if line.startswith("| ") and not
            line.startswith(("| run", "|---")) for cells in [[c.strip() for c in line.strip().strip("|").split("|")]]}
    assert sorted(rows) == ["20 streams open", "without streams"], proc.stdout
    assert float(rows["without streams"][1]) > 0 and rows["without streams"][2] == "1.0"
    streamed = rows["20 streams open"]
    assert float(streamed[1]) > 0 and float(streamed[2]) > 0 and float(streamed[6]) >= float(streamed[5]) >= 0
    assert streamed[7] == "1000/1000", streamed  # 20 streams x 50 writes, none lost
    assert float(rows["without streams"][8]) > 0 and float(streamed[8]) > 0 and float(streamed[9]) > 0, streamed
    assert "targets: event delay p99 " in proc.stdout and "one round: a smoke run" in proc.stdout
    written = set((ROOT / "bench" / "results").glob("events-*.json")) - before
    assert len(written) == 1, written
    doc = json.loads(written.pop().read_text())
    assert [r["run"] for r in doc["events"]] == ["without streams", "20 streams open"]
    assert doc["events"][1]["received"] == doc["events"][1]["expected"] == 1000
