"""``make bench``'s seal section (issue #29): a read, a write and an unseal with each seal, beside ``file``.

One embedded process per seal (``python -m services.embedded``, each on a fresh PostgreSQL database and data
directory): ``file``; ``shamir`` (``sys/init`` with 3 shares, threshold 2; the shares again after each
restart); ``awskms`` on moto's server (a KMS key made there); ``pkcs11`` on SoftHSM2 (a token of this run's,
in a directory of its own). Each is started, initialised, seeded with secrets as bench/run.py seeds its
stacks, and restarted ``--seal-restarts`` times. Every later start gives the unseal time as the process
itself reports it (custody: ``coffer: unsealed (<seal>, auto) in N ms (the attempt that opened it: M ms)``,
since the process began to unseal; for ``shamir``, the ``sys/unseal`` calls that opened it) and the wall
time from spawn to a healthy platform.

Then ``--seal-rounds`` rounds: each seal in turn (the order turns every round) is started, runs bench/run.py's
``read`` and ``write`` scenarios (same paths, body, wrk, ``--clients``, ``--warmup``, ``--duration``), and is
stopped: one platform at a time. req/s is the mean of the rounds, p50/p99 the median; ratios are to the same
run's ``file`` row. Targets (#29): reads and writes within 5 % of ``file``; an auto unseal under 1 s.

    python -m bench.run --only seals [--duration 10] [--warmup 2] [--clients 64] [--seal-rounds 2]
    python -m bench.run --only seals --seals-short     # the smoke run (tests/e2e/test_bench_seals.py)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiobotocore.session import get_session

from bench.procs import free_port
from bench.settle import settle

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("COFFER_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
SOFTHSM_LIBRARY = os.environ.get("COFFER_BENCH_SOFTHSM_LIBRARY", "/usr/lib/softhsm/libsofthsm2.so")
SEALS = ("file", "shamir", "awskms", "pkcs11")
SHARES, THRESHOLD = 3, 2
REGION = "us-east-1"
UNSEALED = re.compile(r"coffer: unsealed \((\w+), (\w+)\) in (\d+) ms(?: \(the attempt that opened it: (\d+) ms\))?")
Wrk = Callable[..., Awaitable[dict[str, Any]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The section's options, on bench/run.py's parser (which gives --duration, --warmup, --clients, --seed)."""
    parser.add_argument("--no-seals", dest="seal_section", action="store_false",
                        help="skip the seal section (bench/seals.py)")
    parser.add_argument("--seal-rounds", type=int, default=2, help="rounds of read + write over every seal")
    parser.add_argument("--seal-restarts", type=int, default=2,
                        help="restarts per seal before the rounds (each round starts each seal once more)")
    parser.add_argument("--seals-short", action="store_true",
                        help="the seal section's smoke run: 1 s per scenario, no warm-up, 1 round (its start "
                             "the only timed unseal), 50 secrets")


class SealStack:
    """One embedded process with one seal, restartable on the same database and data directory."""

    def __init__(self, seal: str, dsn: str, data: Path, extra_env: dict[str, str]) -> None:
        self.seal, self.dsn, self.data, self.port = seal, dsn, data, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("COFFER_", "AWS_"))}
        self.env.update({"PYTHONPATH": str(ROOT), "COFFER_HTTP_PORT": str(self.port), "COFFER_LOG_LEVEL": "warning",
                    "COFFER_DATABASE_URL": dsn, "COFFER_DATA_DIR": str(data), "COFFER_SEAL": seal,
                    # as bench/run.py's stacks: no rate limit in the way
                    "COFFER_RATE_LIMITS": "read=1000000/s,write=1000000/s,auth=1000000/s,pki=1000000/s",
                    **extra_env})
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: collections.deque[str] = collections.deque(maxlen=200)
        self.unsealed: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.unsealed = []
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.embedded", cwd=ROOT, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        self._reader = asyncio.create_task(self._read(self.proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:  # read all along: a full pipe would stop the process
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            if UNSEALED.search(line):
                self.unsealed.append(line)

    async def health(self, session: aiohttp.ClientSession, want: Callable[[int, dict[str, Any]], bool],
                     timeout: float = 90) -> dict[str, Any]:
        """Poll ``sys/health`` until ``want(status, body)``; that body."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.returncode is not None:
                raise SystemExit(f"bench: seals: {self.seal}: the process exited:\n" + "\n".join(self.lines))
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with session.get(f"{self.url}/v1/sys/health") as resp:
                    body = await resp.json(content_type=None)
                    if want(resp.status, body):
                        return dict(body)
            await asyncio.sleep(0.05)
        raise SystemExit(f"bench: seals: {self.seal}: health not as wanted in {timeout}s:\n" + "\n".join(self.lines))

    async def healthy(self, session: aiohttp.ClientSession) -> None:
        await self.health(session, lambda status, body: status == 200 and body.get("status") == "ok")

    async def sealed(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        return await self.health(session, lambda status, body: status == 503 and body.get("status") == "sealed")

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        self.proc = None


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    async with session.post(url, json=body) as resp:
        answer = await resp.json(content_type=None)
        if resp.status not in (200, 201):
            raise SystemExit(f"bench: seals: POST {url}: {resp.status} {answer}")
        return dict(answer)


class Peers:
    """What the auto seals talk to: moto's server with a KMS key, and a SoftHSM2 token of this run's."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.moto: asyncio.subprocess.Process | None = None

    async def start(self) -> dict[str, dict[str, str]]:  # each seal's settings: its process's environment
        return {"file": {}, "shamir": {}, "awskms": await self._moto(), "pkcs11": self._softhsm()}

    async def _moto(self) -> dict[str, str]:
        port = free_port()
        self.moto = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"})
        endpoint = f"http://127.0.0.1:{port}"
        aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
        deadline = time.monotonic() + 30
        while True:
            try:
                async with get_session().create_client(
                        "kms", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing") as kms:
                    made = await kms.create_key(Description="coffer bench seals", KeyUsage="ENCRYPT_DECRYPT")
                break
            except Exception:  # noqa: BLE001 - moto's server still starting
                if time.monotonic() > deadline or self.moto.returncode is not None:
                    raise SystemExit("bench: seals: moto's server did not start (python -m moto.server)") from None
                await asyncio.sleep(0.2)
        return {**aws, "COFFER_AWSKMS_KEY_ID": made["KeyMetadata"]["KeyId"], "COFFER_AWSKMS_REGION": REGION,
                "COFFER_AWSKMS_ENDPOINT_URL": endpoint}

    def _softhsm(self) -> dict[str, str]:
        if not (Path(SOFTHSM_LIBRARY).exists() and shutil.which("softhsm2-util")):
            raise SystemExit("bench: seals: pkcs11 needs SoftHSM2 (Debian package softhsm2); `make bench` installs it")
        base = self.work / "softhsm"
        (base / "tokens").mkdir(parents=True)
        conf = base / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        pin = secrets.token_hex(8)
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "coffer-bench", "--pin", pin,
                        "--so-pin", secrets.token_hex(8)], check=True, capture_output=True, timeout=30,
                       env={**os.environ, "SOFTHSM2_CONF": str(conf)})
        pin_file = base / "pin"
        pin_file.write_text(pin + "\n")
        pin_file.chmod(0o600)
        return {"SOFTHSM2_CONF": str(conf), "COFFER_PKCS11_LIBRARY": SOFTHSM_LIBRARY,
                "COFFER_PKCS11_TOKEN": "coffer-bench", "COFFER_PKCS11_KEY": "coffer-bench-root",
                "COFFER_PKCS11_PIN_FILE": str(pin_file)}

    async def stop(self) -> None:
        if self.moto is not None and self.moto.returncode is None:
            self.moto.terminate()
            try:
                await asyncio.wait_for(self.moto.wait(), 10)
            except TimeoutError:
                self.moto.kill()
                await self.moto.wait()


async def _start(stack: SealStack, session: aiohttp.ClientSession, info: dict[str, Any]) -> dict[str, Any]:
    """Restart the process until its platform is healthy (a seeded secret read back): the unseal as it reports
    it, and the wall time from spawn to healthy."""
    began = time.monotonic()
    await stack.start()
    start: dict[str, Any] = {"ready_s": None, "unseal_ms": None, "attempt_ms": None}
    if stack.seal == "shamir":
        await stack.sealed(session)
        t0 = time.monotonic()
        for share in info["shares"][:THRESHOLD]:
            answer = await _post(session, f"{stack.url}/v1/sys/unseal", {"share": share})
        start["unseal_ms"] = round((time.monotonic() - t0) * 1000, 1)
        assert answer["sealed"] is False, answer
    await stack.healthy(session)
    start["ready_s"] = round(time.monotonic() - began, 3)
    for _ in range(100):  # the line comes with the banner, just after health answers
        if stack.seal in ("file", "shamir") or stack.unsealed:
            break
        await asyncio.sleep(0.02)
    if stack.seal in ("awskms", "pkcs11"):
        m = UNSEALED.search(stack.unsealed[-1]) if stack.unsealed else None
        if m is None:
            raise SystemExit(f"bench: seals: {stack.seal}: no 'coffer: unsealed' line:\n" + "\n".join(stack.lines))
        start["unseal_ms"], start["attempt_ms"] = float(m[3]), float(m[4]) if m[4] else None
    async with session.get(f"{stack.url}/v1/secrets/{info['paths'][0]}", headers=info["auth"]) as r:
        assert r.status == 200, f"{stack.seal}: a seeded secret does not read back after a restart: {r.status}"
    return start


async def prepare(stack: SealStack, session: aiohttp.ClientSession, seed: int, restarts: int) -> dict[str, Any]:
    """Start, initialise, seed, restart ``restarts`` times (timing each unseal), stop: the token, paths, shares
    and starts."""
    began = time.monotonic()
    await stack.start()
    shares: list[str] = []
    if stack.seal == "shamir":
        await stack.sealed(session)
        init = await _post(session, f"{stack.url}/v1/sys/init",
                           {"secret_shares": SHARES, "secret_threshold": THRESHOLD})
        shares = init["unseal_shares"]
        await stack.healthy(session)
    else:
        await stack.healthy(session)
        init = await _post(session, f"{stack.url}/v1/sys/init")
    info: dict[str, Any] = {"auth": {"Authorization": f"Bearer {init['token']}"}, "shares": shares,
                            "paths": [f"bench/app{i % 10}/key{i}" for i in range(seed)],
                            "first_start_s": round(time.monotonic() - began, 3), "starts": []}
    sem = asyncio.Semaphore(32)

    async def put(p: str) -> None:
        async with sem, session.put(f"{stack.url}/v1/secrets/{p}", json={"value": secrets.token_hex(16)},
                                    headers=info["auth"]) as r:
            assert r.status in (200, 201), await r.text()

    await asyncio.gather(*(put(p) for p in info["paths"]))
    for _ in range(restarts):
        await stack.stop()
        info["starts"].append(await _start(stack, session, info))
    await stack.stop()
    return info


def _summary(seal: str, samples: dict[str, list[dict[str, Any]]], starts: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"seal": seal}
    for scenario, runs in samples.items():
        rps = [r["rps"] for r in runs]
        row[scenario] = {"rps": round(statistics.fmean(rps), 1), "rounds_rps": rps,
                         # how far its rounds differ (max - min over the mean): the noise a ratio must beat
                         "spread": round((max(rps) - min(rps)) / statistics.fmean(rps), 3) if len(rps) > 1 else None,
                         "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 1),
                         "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 1),
                         "requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs)}
    unseal = [s["unseal_ms"] for s in starts if s["unseal_ms"] is not None]
    attempts = [s["attempt_ms"] for s in starts if s["attempt_ms"] is not None]
    row["unseal_ms"] = round(statistics.median(unseal), 1) if unseal else None
    row["unseal_max_ms"] = max(unseal) if unseal else None
    row["attempt_ms"] = round(statistics.median(attempts), 1) if attempts else None
    row["ready_s"] = round(statistics.median(s["ready_s"] for s in starts), 2) if starts else None
    row["starts"] = starts
    return row


async def measure(args: argparse.Namespace, session: aiohttp.ClientSession, wrk: Wrk) -> list[dict[str, Any]]:
    """The section: one row per seal (``file`` first), ratios to the ``file`` row."""
    if getattr(args, "seals_short", False):
        duration, warmup, rounds, restarts, seed = 1.0, 0.0, 1, 0, 50
    else:
        duration, warmup, rounds, restarts = args.duration, args.warmup, args.seal_rounds, args.seal_restarts
        seed = args.seed
    seals = list(SEALS)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="coffer-bench-seals-"))
    tag = secrets.token_hex(3)
    peers = Peers(work)
    stacks: dict[str, SealStack] = {}
    try:
        print("bench: seals: moto's server (awskms) and a SoftHSM2 token (pkcs11) ...", flush=True)
        extra = await peers.start()
        info: dict[str, dict[str, Any]] = {}
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            for seal in seals:
                await admin.execute(f'CREATE DATABASE "coffer_bench_seal_{seal}_{tag}"')
        finally:
            await admin.close()
        # one process at a time: an unseal timed while another process works would say little, and four
        # platforms' pools (5 services x 10) would not fit in PostgreSQL's default 100 connections
        for seal in seals:
            dsn = PG_ADMIN.rsplit("/", 1)[0] + f"/coffer_bench_seal_{seal}_{tag}"
            stacks[seal] = SealStack(seal, dsn, work / f"data-{seal}", extra[seal])
            print(f"bench: seals: {seal}: start, init, {seed} secrets, {restarts} restart(s) ...", flush=True)
            info[seal] = await prepare(stacks[seal], session, seed, restarts)
        samples: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"read": [], "write": []} for s in seals}
        for rnd in range(rounds):
            for seal in seals[rnd % len(seals):] + seals[:rnd % len(seals)]:  # the order turns every round
                stack = stacks[seal]
                info[seal]["starts"].append(await _start(stack, session, info[seal]))
                auth = info[seal]["auth"]
                for scenario, method, targets, body in (
                        ("read", "GET", [f"/v1/secrets/{p}" for p in info[seal]["paths"]], "-"),
                        ("write", "PUT", [f"/v1/secrets/bench/w/{n}" for n in range(5000)], "random-value")):
                    await settle(stack.dsn, f"seals: {seal}", None)
                    print(f"bench: seals: round {rnd + 1}/{rounds}: {seal}: secret {scenario}: "
                          f"{f'warm-up {warmup:.0f}s, then ' if warmup else ''}{duration:.0f}s "
                          f"at {args.clients} clients ...", flush=True)
                    if warmup:
                        await wrk(stack.url, auth, method, targets, body, args.clients, warmup)
                    samples[seal][scenario].append(
                        await wrk(stack.url, auth, method, targets, body, args.clients, duration))
                await stack.stop()
        rows = [_summary(seal, samples[seal], info[seal]["starts"]) for seal in seals]
    finally:
        for stack in stacks.values():
            await stack.stop()
        await peers.stop()
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            for seal in seals:
                await admin.execute(f'DROP DATABASE IF EXISTS "coffer_bench_seal_{seal}_{tag}" WITH (FORCE)')
        finally:
            await admin.close()
        shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        for scenario in ("read", "write"):
            base = rows[0][scenario]["rps"]
            row[scenario]["ratio_file"] = round(row[scenario]["rps"] / base, 3) if base else None
        row.update({"clients": args.clients, "duration": duration, "warmup": warmup, "rounds": rounds,
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    r0 = rows[0]
    print(f"\nSeals (issue #29): embedded, {r0['clients']} clients, {r0['duration']:.0f}s per scenario, "
          f"{r0['rounds']} round(s), req/s the mean of the rounds; unseal: median of the restarts (auto: as custody "
          f"reports it, the attempt that opened it in brackets; shamir: the sys/unseal calls); load average "
          f"{r0['loadavg_before'][0]:.2f} before, {r0['loadavg_after'][0]:.2f} after, {os.cpu_count()} cores\n")
    print("| seal | read/s | × file read | write/s | × file write | unseal ms | read p50/p99 ms | write p50/p99 ms"
          " | start → healthy s | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rd, wr = r["read"], r["write"]
        unseal = "-" if r["unseal_ms"] is None else f"{r['unseal_ms']:.0f}" + (
            f" ({r['attempt_ms']:.0f})" if r["attempt_ms"] is not None else "")
        print(f"| {r['seal']} | {rd['rps']} | {rd['ratio_file']} | {wr['rps']} | {wr['ratio_file']} | {unseal} | "
              f"{rd['p50_ms']}/{rd['p99_ms']} | {wr['p50_ms']}/{wr['p99_ms']} | {r['ready_s']} | "
              f"{rd['errors'] + wr['errors']} |")
    verdicts = []
    for r in rows[1:]:
        for scenario in ("read", "write"):
            ratio, spreads = r[scenario]["ratio_file"], (r[scenario]["spread"], rows[0][scenario]["spread"])
            verdicts.append(f"{r['seal']} {scenario} " + (
                "inconclusive (one round)" if None in spreads else
                f"inconclusive (rounds differ by up to {max(spreads):.0%}, more than the 5 % to judge)"
                if max(spreads) > 0.05 else f"{'' if ratio and ratio >= 0.95 else 'NOT '}within 5 % of file"))
        if r["seal"] in ("awskms", "pkcs11"):
            slow = r["unseal_max_ms"] is None or r["unseal_max_ms"] >= 1000
            verdicts.append(f"{r['seal']} unseal {'NOT ' if slow else ''}under 1 s")
    print("\ntargets: " + "; ".join(verdicts))


async def main(args: argparse.Namespace, wrk: Wrk) -> None:
    """``python -m bench.run --only seals``: the section alone; its table, and JSON in bench/results/."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.clients * 2)) as session:
        rows = await measure(args, session, wrk)
    print_table(rows)
    out = ROOT / "bench" / "results" / f"seals-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "seals": rows}, indent=1))
    print(f"\nbench: wrote {out.relative_to(ROOT)}")
