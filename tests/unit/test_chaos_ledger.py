"""``make chaos``'s judge: given what the clients were told and what the bus and the receiver saw, each
kind of wrong is counted in the window it happened in (a checker that can't fail proves nothing)."""

from __future__ import annotations

from tests.chaos.load import Delivery, Ledger, Op
from tests.chaos.verify import recovery, table

FAULTS = [("steady", 0.0, None), ("kill", 10.0, None), ("restart", 25.0, 5.0)]


def _event(event_id: str, kind: str, path: str, version: int | None) -> dict[str, object]:
    return {"id": event_id, "type": kind, "data": {"path": path, "version": version}}


def _delivery(webhook_id: str, hook: str, event: dict[str, object], at: float = 1.0) -> Delivery:
    data = event["data"]
    assert isinstance(data, dict)
    return Delivery(webhook_id, hook, str(event["id"]), str(event["type"]), data["path"], data["version"], at)


def test_a_clean_run_is_sound() -> None:
    ledger = Ledger(acked={("a", 1): ("v1", "steady"), ("a", 2): ("v2", "kill")}, keys={"a"})
    bus = [_event("e1", "secret.created", "a", 1), _event("e2", "secret.updated", "a", 2),
           _event("e2", "secret.updated", "a", 2)]  # the relay sent one twice: the same id counts once
    deliveries = [_delivery(f"m{e}{h}", h, ev) for e, ev in enumerate(bus[:2]) for h in "ab"]
    deliveries.append(_delivery("m1a", "a", bus[1]))  # a retry, same webhook-id
    rows = {r.fault: r for r in table(FAULTS, ledger, set(), set(), bus, deliveries, ["a", "b"])}
    assert all(r.sound() for r in rows.values())
    assert rows["steady"].acked == 1 and rows["kill"].acked == 1
    assert rows["kill"].redelivered == 1 and rows["kill"].deliveries_dup == 0


def test_each_wrong_is_counted_where_it_happened() -> None:
    ledger = Ledger(acked={("a", 1): ("v1", "steady"), ("a", 2): ("v2", "kill"), ("b", 1): ("w", "restart")},
                    keys={"a", "b"})
    ledger.ops = [Op("write", "a", "kill", 11.0, 11.1, 500, "storage_error"),
                  Op("read", "a", "restart", 26.0, 41.0, None, "hung")]
    bus = [_event("e1", "secret.created", "a", 1), _event("e2", "secret.updated", "a", 2),
           _event("e3", "secret.updated", "a", 2),  # the same write's event twice, with two ids
           _event("e9", "secret.updated", "a", 3)]  # an event of a write nobody was told about
    deliveries = [_delivery("m1", "a", bus[0]), _delivery("m2", "b", bus[0]),  # b/1: never delivered
                  _delivery("m3", "a", bus[1]), _delivery("m4", "a", bus[1]), _delivery("m5", "b", bus[1])]
    rows = {r.fault: r for r in table(FAULTS, ledger, {("b", 1)}, set(), bus, deliveries, ["a", "b"])}
    assert rows["steady"].sound() is False and rows["steady"].phantom == 1
    assert rows["kill"].events_dup == 1 and rows["kill"].deliveries_dup == 1
    assert rows["kill"].other_5xx == ["500 storage_error"]
    restart = rows["restart"]
    assert (restart.lost, restart.events_missing, restart.deliveries_missing, restart.hung) == (1, 1, 2, 1)
    assert not any(r.sound() for r in rows.values())


def test_recovery_is_the_longest_a_kind_of_work_went_without_success() -> None:
    streams = {"secrets": [9.0, 10.2, 10.4, 13.0, 13.1], "pki": [10.1, 10.3, 10.5, 11.0], "deliveries": []}
    worst, slowest = recovery(10.0, 14.0, {"secrets": streams["secrets"]})
    assert slowest == "secrets" and abs(worst - 2.6) < 1e-9
    worst, slowest = recovery(10.0, 14.0, {"pki": streams["pki"]})
    assert abs(worst - 3.0) < 1e-9  # nothing after 11.0 until the next fault at 14.0
    worst, slowest = recovery(10.0, 14.0, streams)
    assert slowest == "deliveries" and worst == 4.0  # nothing delivered at all before the next fault
