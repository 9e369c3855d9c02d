"""The end of a chaos run: what the database, the bus and the subscribers hold, held to the ledger, and
the table per fault."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aio_pika

from tests.chaos.load import UNAVAILABLE, Delivery, Gateways, Ledger, Op

TAP = "chaos.tap"


async def declare_tap(amqp_url: str) -> None:
    """A quorum queue of the runner's own, bound to every secret event: what the bus carried."""
    conn = await aio_pika.connect(amqp_url)
    async with conn:
        channel = await conn.channel()
        exchange = await channel.declare_exchange("coffer.events", aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(TAP, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, "secret.#")


async def drain_tap(amqp_url: str) -> list[dict[str, Any]]:
    conn = await aio_pika.connect(amqp_url)
    events: list[dict[str, Any]] = []
    async with conn:
        channel = await conn.channel()
        queue = await channel.declare_queue(TAP, durable=True, arguments={"x-queue-type": "quorum"})
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            events.append(json.loads(message.body))
    return events


@dataclass
class Row:
    fault: str
    recovery: float = 0.0
    slowest: str = ""  # the kind of work that took longest to succeed again
    outage: float | None = None  # how long the broker / database itself was away
    acked: int = 0
    lost: int = 0
    phantom: int = 0
    events_missing: int = 0
    events_dup: int = 0
    deliveries_missing: int = 0
    deliveries_dup: int = 0
    redelivered: int = 0  # the same webhook-id again: a retry, deduped by the receiver
    unavailable: int = 0
    other_5xx: list[str] = field(default_factory=list)
    cut: int = 0
    hung: int = 0
    wrong_reads: int = 0

    def sound(self) -> bool:
        """Nothing acknowledged lost, nothing done twice or unasked, every answer from the vocabulary, none
        hung."""
        return not (self.lost or self.phantom or self.events_missing or self.events_dup or self.deliveries_missing
                    or self.deliveries_dup or self.other_5xx or self.hung or self.wrong_reads)

    def verdict(self, recover_limit: float) -> str:
        return "FAIL" if not self.sound() else "slow" if self.recovery > recover_limit else "ok"


async def read_back(gw: Gateways, ledger: Ledger) -> tuple[set[tuple[str, int]], set[tuple[str, int]]]:
    """Every acknowledged version read again: (lost, phantom) — versions that don't hold their value, and
    versions nobody was told about nor found applied."""
    lost: set[tuple[str, int]] = set()
    sem = asyncio.Semaphore(16)

    async def check(key: str, version: int, value: str) -> None:
        async with sem:
            op = Op("verify", key, "verify", 0.0)
            got = await gw.call(op, "GET", f"/v1/secrets/{key}?version={version}")
            if not (op.ok and got.get("value") == value):
                lost.add((key, version))

    live = {(k, v): val for (k, v), (val, _) in ledger.acked.items() if k not in ledger.deleted}
    await asyncio.gather(*(check(k, v, val) for (k, v), val in live.items()))
    for key in ledger.deleted:
        op = Op("verify", key, "verify", 0.0)
        await gw.call(op, "GET", f"/v1/secrets/{key}")
        if op.status != 404:
            lost.add((key, 0))  # an acknowledged delete undone
    phantom: set[tuple[str, int]] = set()
    known = set(ledger.acked) | set(ledger.applied)
    for key in sorted(ledger.keys):
        op = Op("verify", key, "verify", 0.0)
        got = await gw.call(op, "GET", f"/v1/secrets/{key}:versions?limit=1000")
        for item in (got or {}).get("items", []) if op.ok else []:
            if (key, int(item["version"])) not in known:
                phantom.add((key, int(item["version"])))
    return lost, phantom


def expected_events(ledger: Ledger) -> dict[tuple[str, str, int | None], str]:
    """(type, path, version) of every write that was applied, and every acknowledged delete -> its window."""
    want: dict[tuple[str, str, int | None], str] = {}
    for (key, version), (_, window) in {**ledger.applied, **ledger.acked}.items():
        want[("secret.created" if version == 1 else "secret.updated", key, version)] = window
    for key, window in ledger.deleted.items():
        want[("secret.deleted", key, None)] = window
    return want


def unexplained_events(bus: list[dict[str, Any]], ledger: Ledger) -> set[tuple[str, str, int | None]]:
    """Events of writes nobody was told about nor found applied: (type, path, version)."""
    return {_event_key(e["type"], e["data"].get("path", ""), e["data"].get("version")) for e in bus} \
        - set(expected_events(ledger))


def _event_key(kind: str, path: str, version: int | None) -> tuple[str, str, int | None]:
    return (kind, path, None if kind == "secret.deleted" else version)


def table(faults: list[tuple[str, float, float | None]], ledger: Ledger, lost: set[tuple[str, int]],
          phantom: set[tuple[str, int]], bus: list[dict[str, Any]], deliveries: list[Delivery],
          hooks: list[str]) -> list[Row]:
    """One row per fault (``faults``: name, when injected, outage), the ledger's findings in the window
    each write started in."""
    rows = {name: Row(name, outage=outage) for name, _, outage in faults}
    window_of = {(k, v): w for (k, v), (_, w) in {**ledger.applied, **ledger.acked}.items()}
    for (key, version), (_, window) in ledger.acked.items():
        rows[window].acked += 1
        rows[window].lost += (key, version) in lost
    for key in ledger.deleted:
        rows[ledger.deleted[key]].lost += (key, 0) in lost
    for key, version in phantom:
        rows["steady" if (key, version) not in window_of else window_of[(key, version)]].phantom += 1
    want = expected_events(ledger)
    on_bus: dict[tuple[str, str, int | None], set[str]] = defaultdict(set)
    for e in bus:
        on_bus[_event_key(e["type"], e["data"].get("path", ""), e["data"].get("version"))].add(e["id"])
    delivered: dict[tuple[tuple[str, str, int | None], str], set[str]] = defaultdict(set)
    redelivered: dict[str, int] = defaultdict(int)
    seen: set[str] = set()
    for d in deliveries:
        delivered[(_event_key(d.event_type, d.path, d.version), d.hook)].add(d.webhook_id)
        if d.webhook_id in seen:
            redelivered[d.webhook_id] += 1
        seen.add(d.webhook_id)
    for event, window in want.items():
        row = rows[window]
        row.events_missing += not on_bus.get(event)
        row.events_dup += len(on_bus.get(event, ())) > 1
        for hook in hooks:
            ids = delivered.get((event, hook), set())
            row.deliveries_missing += not ids
            row.deliveries_dup += len(ids) > 1
            row.redelivered += sum(redelivered[i] for i in ids)
    rows["steady"].phantom += len(unexplained_events(bus, ledger))
    for op in ledger.ops:
        row = rows[op.window]
        row.unavailable += op.code == UNAVAILABLE
        row.hung += op.code == "hung"
        row.cut += op.status is None and op.code != "hung"
        if op.status is not None and op.status >= 500 and op.code != UNAVAILABLE:
            row.other_5xx.append(f"{op.status} {op.code}")
    for op in ledger.wrong_reads:
        rows[op.window].wrong_reads += 1
    streams = success_streams(ledger.ops, deliveries)
    bounds = [at - (outage or 0.0) for _, at, outage in faults[1:]] + [float("inf")]  # when each was injected
    for (name, at, _), until in zip(faults[1:], bounds[1:], strict=True):  # the first: no fault, the steady load
        rows[name].recovery, rows[name].slowest = recovery(at, min(until, ledger.ended), streams)
    return list(rows.values())


def success_streams(ops: list[Op], deliveries: list[Delivery]) -> dict[str, list[float]]:
    """When each kind of work last succeeded: secret requests, the PKI's and the lease service's probes,
    webhook deliveries (times of completion, sorted)."""
    streams: dict[str, list[float]] = defaultdict(list)
    for op in ops:
        if op.ok:
            stream = "secrets" if op.kind != "probe" else op.key.split("/")[2].split("?")[0]
            streams[stream].append(op.ended)
    streams["deliveries"] = [d.at for d in deliveries]
    return {name: sorted(times) for name, times in streams.items()}


def recovery(at: float, until: float, streams: dict[str, list[float]]) -> tuple[float, str]:
    """The longest time, from the fault (or the dependency's return) until the next fault, that one kind
    of work went without a success: how long until everything worked again. (slowest stream's name)"""
    worst, slowest = 0.0, ""
    for name, times in streams.items():
        points = [at, *(t for t in times if at < t < until), until]
        gap = max(b - a for a, b in zip(points, points[1:], strict=False))
        if gap > worst:
            worst, slowest = gap, name
    return worst, slowest


async def wait_quiet(deliveries: list[Delivery], expected: int, say: Any, timeout: float = 120) -> None:
    """Until every expected delivery came, or nothing new for 15 s: the backlog after the faults."""
    last, still, waited = -1, 0.0, 0.0
    while len(deliveries) < expected and still < 15 and waited < timeout:
        await asyncio.sleep(1)
        waited += 1
        if len(deliveries) == last:
            still += 1
        else:
            last, still = len(deliveries), 0.0
        if int(waited) % 5 == 0:
            say(f"draining: {len(deliveries)} of {expected} deliveries ...")


def render(rows: list[Row], recover_limits: dict[str, float]) -> str:
    head = ("| fault | acked writes | lost | phantom | events missing / dup | deliveries missing / dup "
            "(retries, same id) | 503 | cut | hung | other 5xx | outage s | recovery s, slowest (limit) | verdict |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        limit = recover_limits.get(r.fault, 5.0)
        other = len(r.other_5xx)
        lines.append(
            f"| {r.fault} | {r.acked} | {r.lost} | {r.phantom} | {r.events_missing} / {r.events_dup} | "
            f"{r.deliveries_missing} / {r.deliveries_dup} ({r.redelivered}) | {r.unavailable} | {r.cut} | "
            f"{r.hung} | {other} | {'' if r.outage is None else f'{r.outage:.1f}'} | "
            f"{r.recovery:.1f} {r.slowest} ({limit:.0f}) | {r.verdict(limit)} |")
    return "\n".join(lines)
