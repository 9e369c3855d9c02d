"""``make chaos`` / ``make chaos-short``: faults injected into the distributed mode under a steady load.

    python -m tests.chaos [--short] [--rounds N] [--clients N] [--hold S]

It starts a RabbitMQ node and a PostgreSQL cluster of its own (other ports, other data directories),
Coffer's five services as separate processes with two gateways behind a round-robin, and a webhook
receiver with two subscriptions to every secret event. While the clients write (CAS), read and churn
keys, it injects one fault at a time — ``kill -9`` of each process (restarted by the runner's
supervisor), a RabbitMQ restart, a PostgreSQL restart, a gateway killed — then faults combined. At the
end it holds the database, the bus and the receiver to the ledger of what the clients were told and
prints one table row per fault. Exit status 1 when a row fails its targets.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from services.provision import ensure_database
from tests.chaos.infra import ROOT, OwnBroker, OwnPostgres, Supervisor, broker_port, healthy
from tests.chaos.load import Gateways, Load, Receiver
from tests.chaos.verify import declare_tap, drain_tap, read_back, render, table, unexplained_events, wait_quiet
from tests.conftest import free_port

KILL_LIMIT, RESTART_LIMIT = 5.0, 10.0


def say(text: str) -> None:
    print(f"chaos: {text}", flush=True)


def faults(sup: Supervisor, broker: OwnBroker, pg: OwnPostgres) -> list[tuple[str, float, Callable[[], Awaitable[
        float | None]]]]:
    """(name, recovery limit, inject) — ``inject`` returns how long the dependency itself was away."""

    def kill(*names: str) -> Callable[[], Awaitable[float | None]]:
        async def run() -> float | None:
            for name in names:
                sup.kill(name)
            return None
        return run

    async def both() -> float | None:
        sup.kill("secrets")
        sup.kill("gateway-a")
        return await broker.restart()

    async def pg_and_kill() -> float | None:
        sup.kill("webhooks")
        return await pg.restart()

    return [
        *[(f"kill -9 {name}", KILL_LIMIT, kill(name)) for name in ("secrets", "webhooks", "pki", "lease")],
        ("kill -9 gateway-a (1 of 2)", KILL_LIMIT, kill("gateway-a")),
        ("RabbitMQ restart", RESTART_LIMIT, broker.restart),
        ("PostgreSQL restart", RESTART_LIMIT, pg.restart),
        ("kill -9 secrets + webhooks + gateway-a", KILL_LIMIT, kill("secrets", "webhooks", "gateway-a")),
        ("RabbitMQ restart + kill -9 secrets, gateway-a", RESTART_LIMIT, both),
        ("PostgreSQL restart + kill -9 webhooks", RESTART_LIMIT, pg_and_kill),
    ]


async def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="coffer-chaos-"))
    broker, pg = OwnBroker(broker_port()), OwnPostgres(free_port())
    say(f"starting RabbitMQ {broker.node} on 127.0.0.1:{broker.port} and PostgreSQL {pg.name} on "
        f"127.0.0.1:{pg.port} (the runner's own; logs in {work}) ...")
    ports = {"gateway-a": free_port(), "gateway-b": free_port()}
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
           "COFFER_AMQP_URL": broker.url, "COFFER_DATABASE_URL": pg.dsn, "COFFER_DATA_DIR": str(work / "data"),
           "COFFER_LOG_LEVEL": "warning", "COFFER_RPC_TIMEOUT": "5", "COFFER_OUTBOX_POLL_INTERVAL": "0.2",
           "COFFER_OUTBOUND_ALLOWED_CIDRS": "127.0.0.0/8", "COFFER_OUTBOUND_ALLOW_HTTP": "true",
           "COFFER_WEBHOOK_POLL_INTERVAL": "0.2",
           "COFFER_RATE_LIMITS": "read=1000000/s,write=1000000/s,auth=1000000/s,pki=1000000/s"}
    sup = Supervisor(env, work)
    receiver = Receiver()
    code = 1
    try:
        await asyncio.gather(broker.start(), pg.start())
        await ensure_database(pg.dsn, say)
        await declare_tap(broker.url)
        for name in ("secrets", "pki", "lease", "webhooks"):
            sup.add(name, f"services.{name}")
        for name, port in ports.items():
            sup.add(name, "services.gateway", COFFER_HTTP_PORT=str(port))
        say("starting Coffer: gateway x2, secrets, pki, lease, webhooks (each its own process, supervised) ...")
        sup.start()
        urls = [f"http://127.0.0.1:{p}" for p in ports.values()]
        async with aiohttp.ClientSession() as session:
            # aiohttp sends a PUT or DELETE again, once, when a kept-alive connection breaks under it (a
            # killed gateway): a second execution the ledger would mistake for the server's. The clients
            # here see every cut, as the ledger needs; a client that retries must read before it trusts
            # a version_conflict (the README says so).
            session._retry_connection = False
            await healthy(session, urls, timeout=120)
            async with session.post(f"{urls[0]}/v1/sys/init") as resp:
                token = (await resp.json())["token"]
            hook_port = free_port()
            await receiver.start(hook_port)
            gw = Gateways(session, urls, token, timeout=15.0)
            hooks = ["a", "b"]
            for hook in hooks:
                async with session.post(f"{urls[0]}/v1/webhooks", headers=gw.headers,
                                        json={"url": f"http://127.0.0.1:{hook_port}/{hook}"}) as resp:
                    made = await resp.json()
                async with session.post(f"{urls[0]}/v1/subscriptions", headers=gw.headers, json={
                        "webhook_id": made["id"], "event_types": ["secret.*"], "path_pattern": "chaos/**"}) as resp:
                    assert resp.status == 201, await resp.text()
            load = Load(gw, args.clients, args.pause)
            say(f"load: {args.clients} clients (CAS writes, reads, create+delete), two subscriptions; "
                f"steady for {args.hold:.0f}s ...")
            injected: list[tuple[str, float, float | None]] = [("steady", time.monotonic(), None)]
            load.start()
            await asyncio.sleep(args.hold)
            limits = {"steady": KILL_LIMIT}
            for round_ in range(args.rounds):
                for name, limit, inject in faults(sup, broker, pg):
                    label = name if args.rounds == 1 else f"{name} #{round_ + 1}"
                    say(f"fault: {label} ...")
                    load.window = label
                    at = time.monotonic()
                    outage = await inject()
                    if outage is not None:
                        at = time.monotonic()  # recovery counts from the dependency's return
                        say(f"  back after {outage:.1f}s")
                    injected.append((label, at, outage))
                    limits[label] = limit
                    await healthy(session, urls, timeout=120)
                    await asyncio.sleep(args.hold)
            load.window = "steady"
            say("stopping the load; waiting for the backlog of events and deliveries ...")
            await load.stop()
            ledger = load.ledger
            expected = 2 * (len(ledger.acked) + len(ledger.applied) + len(ledger.deleted))
            await wait_quiet(receiver.deliveries, expected, say)
            say(f"reading back {len(ledger.acked)} acknowledged writes and draining the bus tap ...")
            lost, phantom = await read_back(gw, ledger)
        bus = await drain_tap(broker.url)
        rows = table(injected, ledger, lost, phantom, bus, receiver.deliveries, hooks)
        dump(work, injected, ledger, lost, phantom | {(f"{kind} {path}", version or 0) for kind, path, version
                                                      in unexplained_events(bus, ledger)}, receiver.deliveries, sup)
        print(render(rows, limits), flush=True)
        for row in rows:
            if row.other_5xx:
                say(f"{row.fault}: other 5xx: {sorted(set(row.other_5xx))[:5]}")
        failed = [r.fault for r in rows if not r.sound()]
        slow = [r.fault for r in rows if r.verdict(limits[r.fault]) == "slow"]
        restarts = {p.name: len(p.restarts) for p in sup.procs.values()}
        say(f"{len(ledger.ops)} requests; {len(bus)} events on the bus; {len(receiver.deliveries)} deliveries; "
            f"restarts by the supervisor: {restarts}")
        say("verdict: " + ("nothing lost, duplicated or hung; every 5xx a 503" if not failed
                           else f"FAILED: {', '.join(failed)}")
            + ("; recovery within its limit everywhere" if not slow else f"; slower than the limit: {', '.join(slow)}"))
        if slow and not args.timing_advisory:
            failed += slow
        code = 0 if not failed else 1
    finally:
        await receiver.stop()
        await sup.stop()
        await broker.remove()
        await pg.remove()
        if code == 0:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"the services' logs stay in {work}")
    return code


def dump(work: Path, injected: list[tuple[str, float, float | None]], ledger: Any, lost: set[Any],
         phantom: set[Any], deliveries: list[Any], sup: Supervisor) -> None:
    """What the run saw, for whoever reads a failed verdict: every request, every fault, the findings."""
    zero = injected[0][1]
    with (work / "ops.jsonl").open("w") as out:
        for name, at, outage in injected:
            out.write(json.dumps({"fault": name, "at": round(at - zero, 3), "outage": outage}) + "\n")
        for op in ledger.ops:
            out.write(json.dumps({**dataclasses.asdict(op), "started": round(op.started - zero, 3),
                                  "ended": round(op.ended - zero, 3)}) + "\n")
        for d in deliveries:
            out.write(json.dumps({"delivery": d.webhook_id, "path": d.path, "at": round(d.at - zero, 3)}) + "\n")
        for proc in sup.procs.values():
            out.write(json.dumps({"restarted": proc.name, "at": [round(t - zero, 3) for t in proc.restarts]}) + "\n")
    (work / "findings.json").write_text(json.dumps({"lost": sorted(lost), "phantom": sorted(phantom)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="one round of each fault (CI)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--pause", type=float, default=0.02, help="each client's pause between requests, s")
    parser.add_argument("--hold", type=float, default=8.0, help="seconds of load after each recovery")
    parser.add_argument("--timing-advisory", action="store_true",
                        help="a recovery over its limit is reported, not a failure (--short: a shared CI machine)")
    args = parser.parse_args()
    if args.short:
        args.rounds, args.clients, args.hold, args.timing_advisory = 1, 8, 4.0, True
    if not shutil.which("pg_createcluster") or not Path("/usr/lib/rabbitmq/bin/rabbitmq-server").exists():
        print("chaos: needs PostgreSQL's pg_createcluster and RabbitMQ's server (Debian packages)")
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
