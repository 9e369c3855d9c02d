"""``make bench`` goes on when one scenario fails (issue #36: one ACME order's traceback lost every figure
measured before it): the failure is a marked row of the table, the next scenario runs."""

from __future__ import annotations

from bench.run import guarded


async def test_a_failing_scenario_is_a_marked_row_without_figures() -> None:
    async def boom() -> list[dict[str, object]]:
        raise RuntimeError("an order ended invalid")

    rows = await guarded("embedded", "ACME orders", boom())
    assert len(rows) == 1
    row = rows[0]
    assert row["mode"] == "embedded" and row["scenario"] == "ACME orders — FAILED (RuntimeError)"
    assert row["rps"] == 0.0 and row["errors"] == 1 and row["p99_ms"] is None
    assert row["failed"] == "RuntimeError: an order ended invalid"


async def test_a_scenario_that_works_is_its_rows() -> None:
    async def fine() -> list[dict[str, object]]:
        return [{"mode": "embedded", "scenario": "secret read", "rps": 10.0}]

    assert await guarded("embedded", "secret read", fine()) == [{"mode": "embedded", "scenario": "secret read",
                                                                  "rps": 10.0}]
