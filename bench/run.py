"""``make bench``: throughput and latency of Coffer through the gateway.

First the glob matcher's cost per match (bench/globs.py, in this process).
Then it starts the stack as separate processes: embedded mode (one process,
in-process bus) and distributed mode (five processes on RabbitMQ), each on a
fresh PostgreSQL database. For each, it seeds secrets, warms up, and drives
each scenario with wrk (its own process, C, one thread; bench/scenario.lua)
at N keep-alive connections for a fixed time. Beside them, the limits of
bench/limits.py. Prints a Markdown table and writes JSON to ``bench/results/``.

    python -m bench.run [--duration 10] [--clients 64] [--modes embedded,distributed]
                        [--scenarios read,read32,write,list,token,issue-ec,issue-rsa,ocsp,lease] [--no-fanout]
    python -m bench.run --only seals [--seals-short]    # the seal section alone (bench/seals.py); --no-seals skips it
    python -m bench.run --only logins [--logins-short]  # JWT vs client-secret logins (bench/logins.py); --no-logins
    python -m bench.run --only events [--streams-short] # writes beside 200 open event streams (bench/events.py)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as pyplatform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import events, globs, logins, seals
from bench.acme import acme_rows
from bench.exports import export_rows
from bench.fanout import webhook_fanout
from bench.federation import federation_rows
from bench.leases import lease_rows
from bench.pki import ISSUE_BODY, pki_setup
from bench.procs import free_port, rss_peak_mb, run_json, run_lines
from bench.settle import settle
from shared.registry import SERVICES

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("COFFER_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP = os.environ.get("COFFER_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672")


class Stack:
    """The processes of one run mode."""

    def __init__(self, mode: str, dsn: str, amqp: str | None, data: Path) -> None:
        self.mode, self.port = mode, free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
        env.update({"PYTHONPATH": str(ROOT), "COFFER_HTTP_PORT": str(self.port), "COFFER_LOG_LEVEL": "warning",
                    "COFFER_DATABASE_URL": dsn, "COFFER_DATA_DIR": str(data),
                    # the webhook scenario delivers to a receiver on this machine
                    "COFFER_OUTBOUND_ALLOWED_CIDRS": "127.0.0.0/8", "COFFER_OUTBOUND_ALLOW_HTTP": "true",
                    "COFFER_WEBHOOK_POLL_INTERVAL": "0.2", "COFFER_ENGINE_ALLOWED_CIDRS": "127.0.0.0/8",
                    "COFFER_ENGINE_POSTGRESQL_LEGACY": "true",  # the lease cluster is this machine's version
                    "COFFER_RATE_LIMITS": "read=1000000/s,write=1000000/s,auth=1000000/s,pki=1000000/s"})
        if amqp:
            env["COFFER_AMQP_URL"] = amqp
        modules = ["services.embedded"] if mode == "embedded" else [f"services.{s}" for s in SERVICES]
        self.procs = {m.split(".")[1]: subprocess.Popen([sys.executable, "-m", m], env=env, cwd=ROOT,
                                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for m in modules}
        self.url = f"http://127.0.0.1:{self.port}"

    async def wait_healthy(self, session: aiohttp.ClientSession, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{self.url}/v1/sys/health") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.3)
        raise SystemExit(f"{self.mode}: not healthy after {timeout}s")

    def rss(self) -> dict[str, float | None]:
        return {name: rss_peak_mb(p.pid) for name, p in self.procs.items()}

    def stop(self) -> None:
        for p in self.procs.values():
            p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()


async def wrk(url: str, headers: dict[str, str], method: str, targets: list[str], body: str, clients: int,
              duration: float) -> dict[str, Any]:
    """``clients`` keep-alive connections driven by wrk (C, one thread) for ``duration`` seconds.

    wrk runs bench/scenario.lua: it cycles through ``targets`` and prints one JSON line with
    requests, errors (HTTP >= 400, socket errors, timeouts), req/s and latency percentiles.
    """
    if not shutil.which("wrk"):
        raise SystemExit("bench: needs wrk (Debian package 'wrk'); `make bench` installs it")
    with tempfile.NamedTemporaryFile("w", suffix=".paths", delete=False) as f:
        f.write("\n".join(targets) + "\n")
    try:
        command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
                   "-s", str(ROOT / "bench" / "scenario.lua")]
        # headers (the bearer token) go by environment, not on a command line other users can read
        env = {**os.environ, "BENCH_HEADERS": json.dumps(headers)}
        proc = await asyncio.create_subprocess_exec(*command, url, "--", method, f.name, body, env=env,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
    finally:
        os.unlink(f.name)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"bench: wrk failed: {err.decode().strip()}")
    res = json.loads(lines[-1])
    return {k: res[k] for k in ("requests", "errors", "rps", "p50_ms", "p95_ms", "p99_ms")}


def failed_row(mode: str, label: str, exc: BaseException) -> dict[str, Any]:
    """The row of a scenario that failed: in the table, marked, with no figures (issue #36: one scenario's
    traceback lost every figure measured before it)."""
    return {"mode": mode, "scenario": f"{label} — FAILED ({type(exc).__name__})", "requests": 0, "errors": 1,
            "rps": 0.0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "failed": f"{type(exc).__name__}: {exc}"[:300]}


async def guarded(mode: str, label: str, rows: Awaitable[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``rows``, or one failed row when measuring them raised: the run goes on to the next scenario."""
    try:
        return await rows
    except Exception as exc:  # noqa: BLE001 - one scenario's failure must not lose the others' figures
        print(f"bench: {mode}: {label}: FAILED, going on with the next scenario:", flush=True)
        traceback.print_exc()
        return [failed_row(mode, label, exc)]


async def run_mode(mode: str, args: argparse.Namespace, session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    tag = secrets.token_hex(3)
    db = f"coffer_bench_{tag}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    vhost = f"coffer_bench_{tag}"
    amqp = None
    if mode == "distributed":
        subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True)
        amqp = f"{AMQP}/{vhost}"
    data = ROOT / "bench" / "results" / f"data-{tag}"
    stack = Stack(mode, PG_ADMIN.rsplit("/", 1)[0] + f"/{db}", amqp, data)
    print(f"bench: {mode}: starting {len(stack.procs)} process(es) ...", flush=True)
    try:
        await stack.wait_healthy(session)
        async with session.post(f"{stack.url}/v1/sys/init") as resp:
            init = await resp.json()
        token = init["token"]
        auth = {"Authorization": f"Bearer {token}"}
        paths = [f"bench/app{i % 10}/key{i}" for i in range(args.seed)]
        print(f"bench: {mode}: seeding {len(paths)} secrets ...", flush=True)
        sem = asyncio.Semaphore(32)

        async def seed(p: str) -> None:
            async with sem, session.put(f"{stack.url}/v1/secrets/{p}", json={"value": secrets.token_hex(16)},
                                        headers=auth) as r:
                assert r.status in (200, 201), await r.text()

        await asyncio.gather(*(seed(p) for p in paths))
        pki = await pki_setup(session, stack.url, auth) if {"issue-ec", "issue-rsa", "ocsp"} & set(
            args.scenarios.split(",")) else {}

        scenarios = {
            "read": ("secret read", "GET", [f"/v1/secrets/{p}" for p in paths], "-", args.clients),
            "read32": ("secret read, 32 clients", "GET", [f"/v1/secrets/{p}" for p in paths], "-", 32),
            "write": ("secret write", "PUT", [f"/v1/secrets/bench/w/{n}" for n in range(5000)], "random-value",
                      args.clients),
            "list": ("list of 100", "GET", [f"/v1/secrets?prefix=bench/app{n}/&limit=100" for n in range(10)], "-",
                     args.clients),
            "token": ("token issue", "POST", ["/v1/auth/token"], json.dumps(
                {"client_id": init["client_id"], "client_secret": init["client_secret"]}), args.clients),
            "issue-ec": ("issue EC P-256 leaf", "POST", ["/v1/pki/roles/bench-ec:issue"], ISSUE_BODY, 16),
            "issue-rsa": ("issue RSA-2048 leaf", "POST", ["/v1/pki/roles/bench-rsa:issue"], ISSUE_BODY, 16),
            "ocsp": ("OCSP answer (GET, no token)", "GET", pki.get("ocsp", []), "-", args.clients),
        }
        async def http_scenario(key: str) -> list[dict[str, Any]]:
            name, method, targets, body, clients = scenarios[key]
            await settle(PG_ADMIN.rsplit("/", 1)[0] + f"/{db}", mode, vhost if amqp else None)
            print(f"bench: {mode}: {name}: warm-up {args.warmup:.0f}s, then {args.duration:.0f}s "
                  f"at {clients} clients ...", flush=True)
            await wrk(stack.url, auth, method, targets, body, clients, args.warmup)
            res = await wrk(stack.url, auth, method, targets, body, clients, args.duration)
            return [{"mode": mode, "scenario": name, **res}]

        results = []
        for key in args.scenarios.split(","):
            if key == "federation":
                rows = federation_rows(mode, stack.url, auth, session, [f"/v1/secrets/{p}" for p in paths],
                                       args.duration, args.warmup, wrk)
            elif key == "export":
                rows = export_rows(mode, stack.url, auth, session, "bench/app", len(paths))
            elif key == "acme":
                rows = acme_rows(mode, stack.url, auth, session)
            elif key == "lease":
                rows = lease_rows(mode, stack.url, auth, session, args, PG_ADMIN.rsplit("/", 1)[0] + f"/{db}",
                                  vhost if amqp else None)
            else:
                rows = http_scenario(key)
            results += await guarded(mode, scenarios[key][0] if key in scenarios else key, rows)
        async def limit_row(scenario: str, *command: str) -> list[dict[str, Any]]:
            return [{"mode": mode, "scenario": scenario, **await run_json(sys.executable, "-m", "bench.limits",
                                                                          *command)}]

        print(f"bench: {mode}: limit: direct asyncpg read + AES-GCM decrypt in one process ...", flush=True)
        results += await guarded(mode, "limit: direct read", limit_row(
            "limit: direct read (no HTTP, no bus)", "direct-read", "--dsn", PG_ADMIN.rsplit("/", 1)[0] + f"/{db}",
            "--schema", "secrets", "--key-file", str(data / "kms.key"), "--tenant", init["tenant_id"],
            "--duration", str(args.duration), "--clients", str(args.clients)))
        for key, key_type, label in (("issue-ec", "ec-p256", "EC P-256"), ("issue-rsa", "rsa-2048", "RSA-2048")):
            if key in args.scenarios.split(","):
                print(f"bench: {mode}: limit: {label} leaf in cryptography alone, in one process ...", flush=True)
                results += await guarded(mode, f"limit: {label} leaf", limit_row(
                    f"limit: {label} leaf, cryptography only", "pki-issue", "--key-type", key_type,
                    "--duration", str(args.duration), "--clients", "16"))
        if args.fanout:
            print(f"bench: {mode}: webhook fan-out: {args.events} events x 3 subscriptions ...", flush=True)

            async def fanout() -> list[dict[str, Any]]:
                return [{"mode": mode, **row} for row in await webhook_fanout(session, stack.url, auth, args.events)]

            results += await guarded(mode, "webhook fan-out", fanout())
        rss = stack.rss()
        for r in results:
            r["peak_rss_mb"] = {k: round(v, 1) if v else None for k, v in rss.items()}
        return results
    finally:
        stack.stop()
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        if amqp:
            subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)
        subprocess.run(["rm", "-rf", str(data)])


async def raw_rpc(args: argparse.Namespace, kind: str = "rpc", *, clients: int | None = None,
                  batch_max: int = 64) -> dict[str, Any]:
    """An RPC round trip over RabbitMQ between two processes, empty handler.

    ``kind`` "rpc": plain aio-pika, no confirms (the ceiling); "bus": through shared.bus.RabbitBus
    (``batch_max`` 1: without coalescing).
    """
    vhost = f"coffer_bench_rpc_{secrets.token_hex(3)}"
    subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], check=True,
                   capture_output=True)
    amqp = f"{AMQP}/{vhost}"
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.limits", f"{kind}-server", "--amqp", amqp, "--batch-max", str(batch_max),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert server.stdout is not None
        await asyncio.wait_for(server.stdout.readline(), 30)
        return await run_json(sys.executable, "-m", "bench.limits", f"{kind}-client", "--amqp", amqp,
                              "--duration", str(args.duration), "--clients", str(clients or args.clients),
                              "--batch-max", str(batch_max))
    finally:
        server.kill()
        await server.wait()
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {name: version(name) for name in ("aiohttp", "aio-pika", "asyncpg", "cryptography", "pydantic")}
    found["python"] = pyplatform.python_version()
    found["rabbitmq"] = subprocess.run(["rabbitmqctl", "version"], capture_output=True, text=True).stdout.strip()
    pg = subprocess.run(["psql", PG_ADMIN, "-Atc", "SHOW server_version"], capture_output=True, text=True)
    found["postgresql"] = pg.stdout.strip()
    return found


def _limit_of(scenario: str) -> str:
    """Which limit a scenario is measured against: its own key type's for issuing, else the direct read."""
    for label in ("EC P-256 leaf", "RSA-2048 leaf"):
        if label in scenario:
            return label
    if scenario.startswith(("PG credentials", "limit: PG", "PG engine alone")):
        return "PG CREATE ROLE + DROP ROLE"
    return "-" if scenario.startswith(("OCSP", "lease expiry", "export", "ACME")) else "direct read"


async def main() -> None:
    parser = argparse.ArgumentParser(description="Coffer benchmark")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--modes", default="embedded,distributed")
    parser.add_argument("--scenarios",
                        default="read,read32,write,list,token,issue-ec,issue-rsa,ocsp,lease,export,federation,acme",
                        help="HTTP scenarios, of read, read32, write, list, token, issue-ec, issue-rsa, ocsp, lease,"
                             " export, federation, acme")
    parser.add_argument("--no-fanout", dest="fanout", action="store_false", help="skip the webhook fan-out")
    parser.add_argument("--events", type=int, default=1000, help="events of the webhook fan-out scenario")
    parser.add_argument("--only", choices=["seals", "logins", "events"],
                        help="run this section alone (seals: bench/seals.py, logins: bench/logins.py, events: "
                             "bench/events.py)")
    seals.add_arguments(parser)
    logins.add_arguments(parser)
    events.add_arguments(parser)
    args = parser.parse_args()
    if args.only:
        await {"seals": seals, "logins": logins, "events": events}[args.only].main(args, wrk)
        return
    connector = aiohttp.TCPConnector(limit=args.clients * 2)
    results: list[dict[str, Any]] = []
    print("bench: glob matcher: typical and pathological patterns ...", flush=True)
    glob_rows = globs.measure()
    print("bench: limit: raw RPC round trip over RabbitMQ (aio-pika, two processes, empty handler) ...", flush=True)
    rpc = {"mode": "both", "scenario": "limit: raw RPC round trip (aio-pika, no confirms)", **await raw_rpc(args)}
    print("bench: the same round trip through Coffer's bus: coalesced, not coalesced, and at 1 client ...",
          flush=True)
    bus_rows = []
    for label, kwargs in ((f"{args.clients} clients", {}), (f"{args.clients} clients, coalescing off",
                                                            {"batch_max": 1}),
                          ("1 client", {"clients": 1}), ("1 client, coalescing off", {"clients": 1, "batch_max": 1})):
        res = await raw_rpc(args, "bus", **kwargs)
        per = res.pop("calls_per_message", None)
        bus_rows.append({"mode": "both", "scenario": f"RPC round trip through shared.bus (empty handler), {label}"
                                                     f" [{per} calls/message]", **res})
    print("bench: the outbox relay: 5,000 rows to confirmed events, batched and one by one ...", flush=True)
    relay = [{"mode": "both", "scenario": f"outbox relay, {r['way']} (5,000 events)", "requests": r["events"],
              "errors": 0, "rps": r["rps"], "p50_ms": None, "p95_ms": None, "p99_ms": None}
             for r in await run_lines(sys.executable, "-m", "bench.relay", "--events", "5000")]
    async with aiohttp.ClientSession(connector=connector) as session:
        for mode in args.modes.split(","):
            results += await guarded(mode.strip(), "the mode's platform", run_mode(mode.strip(), args, session))
        seal_rows = login_rows = event_rows = []
        # a section that fails prints FAILED and its table stays empty; the rest is printed
        if args.seal_section:
            seal_rows = [r for r in await guarded("embedded", "seals section", seals.measure(args, session, wrk))
                         if "failed" not in r]
        if args.login_section:
            login_rows = [r for r in await guarded("embedded", "logins section", logins.measure(args, session, wrk))
                          if "failed" not in r]
        if args.stream_section:
            event_rows = [r for r in await guarded("embedded", "events section", events.measure(args, session))
                          if "failed" not in r]
    results += [*bus_rows, rpc, *relay]
    limits = {(r["mode"], r["scenario"].removeprefix("limit: ").split(" (")[0].split(",")[0]): r["rps"]
              for r in results if r["scenario"].startswith("limit: ")}
    print(f"\n{args.clients} clients, {args.duration:.0f}s per scenario, {os.cpu_count()} cores, "
          f"Python {pyplatform.python_version()}\n")
    # every row against the embedded read of the same run too (issue: "ratios to the embedded read")
    embedded_read = next((r["rps"] for r in results if r["mode"] == "embedded" and r["scenario"] == "secret read"),
                         None)
    print("| mode | scenario | req/s | × its limit | × embedded read | × raw RPC | p50 ms | p95 ms | p99 ms | errors"
          " | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rss = ", ".join(f"{k} {v}" for k, v in r.get("peak_rss_mb", {}).items())
        direct = limits.get((r["mode"], _limit_of(r["scenario"])))
        r["ratio_direct_read"] = round(r["rps"] / direct, 3) if direct and r["rps"] else None
        r["ratio_embedded_read"] = round(r["rps"] / embedded_read, 3) if embedded_read and r["rps"] else None
        r["ratio_raw_rpc"] = round(r["rps"] / rpc["rps"], 3) if rpc["rps"] and r["rps"] else None
        print(f"| {r['mode']} | {r['scenario']} | {r['rps']} | {r['ratio_direct_read'] or ''} | "
              f"{r['ratio_embedded_read'] or ''} | {r['ratio_raw_rpc'] or ''} | {r['p50_ms']} | {r['p95_ms']} | "
              f"{r['p99_ms']} | {r['errors']} | {rss} |")
    print()
    globs.print_table(glob_rows)
    seals.print_table(seal_rows)
    logins.print_table(login_rows)
    events.print_table(event_rows)
    out = ROOT / "bench" / "results" / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "versions": versions(),
                               "clients": args.clients, "duration": args.duration, "results": results,
                               "globs": glob_rows, "seals": seal_rows,
                               "logins": login_rows, "events": event_rows}, indent=1))
    print(f"\nbench: wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
