"""``make bench``'s login section (issue #30): ``jwt`` logins per second beside client-secret logins.

One embedded platform (``python -m services.embedded`` on a fresh PostgreSQL database, the ``auth`` rate
limit raised through ``COFFER_RATE_LIMITS`` as bench/run.py's stacks do: a login spends from it). In it:

* ``client-secret``: a service identity bound to a read policy; every request ``POST /v1/auth/token`` with
  its ``client_id`` and ``client_secret`` (one body);
* ``jwt RS256`` and ``jwt ES256``: two ``jwt`` methods, each with one **pinned** public key (RSA-2048 and
  EC P-256 made by this run), so no key is fetched, ever; each a role ``bench`` bound to the audience and a
  ``team`` claim glob, with the same read policy and scope. Every request ``POST
  /v1/auth/methods/{name}/login`` with one token from a pool of ``--login-pool`` pre-minted tokens per
  algorithm: each token distinct (its own ``sub`` and ``jti``), a day's ``exp``.

What the gateway keeps between logins: the method's ``KeySource`` (the parsed pinned keys, per method) —
nothing per token. Each JWT login reads the method and the role rows, checks the signature and the claims
in full, and runs the external identity's transaction (an advisory lock on (tenant, method, ``sub``), the
identity's UPDATE, its bindings read), then audits and signs. Each token's ``sub`` is its own external
identity, made by one login of every token before the rounds, so the rounds measure the logins of known
workloads, not first logins, and no two concurrent logins wait on the same subject's lock.

``--login-rounds`` rounds, the order of the three kinds turning every round; each kind is driven by
bench/run.py's ``wrk`` (bench/scenario.lua, the bodies from a file: ``@FILE``) at ``--clients`` keep-alive
connections, ``--warmup`` then ``--duration`` seconds, after the outboxes settle. logins/s is the mean of
the rounds, p50/p99 the median; ratios are to the same run's client-secret rate. Target (#30): each JWT
rate ≥ 0.8 × the client-secret rate. Beside each rate, the CPU one login cost the platform's process and the
PostgreSQL backends of its database (``CpuMeter``, medians of the rounds): a rate moves with whatever else the
machine runs, CPU per login much less, so it says where a gap comes from.

    python -m bench.run --only logins [--duration 10] [--warmup 2] [--clients 64] [--login-rounds 3]
    python -m bench.run --only logins --logins-short    # the smoke run (tests/e2e/test_bench_logins.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import psutil
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bench.seals import SealStack
from bench.settle import settle
from bench.stack import embedded_stack

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("client-secret", "jwt RS256", "jwt ES256")
TARGET = 0.8
ISSUER = "https://issuer.bench.coffer.invalid"  # pinned keys: never fetched, only compared with iss
AUDIENCE = "coffer-bench"
# a login spends from the auth limit (per address): raised, as bench/run.py's stacks raise every category
RATE_LIMITS = "read=1000000/s,write=1000000/s,auth=1000000/s,pki=1000000/s"
Wrk = Callable[..., Awaitable[dict[str, Any]]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The section's options, on bench/run.py's parser (which gives --duration, --warmup, --clients)."""
    parser.add_argument("--no-logins", dest="login_section", action="store_false",
                        help="skip the login section (bench/logins.py)")
    parser.add_argument("--login-rounds", type=int, default=3, help="rounds over the three kinds of login")
    parser.add_argument("--login-pool", type=int, default=500, help="distinct pre-minted tokens per algorithm")
    parser.add_argument("--logins-short", action="store_true",
                        help="the login section's smoke run: 1 s per kind, no warm-up, 1 round, 20 tokens each")


def _pem(private: Any) -> str:
    return str(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def mint_pool(private: Any, alg: str, count: int, tag: str) -> list[str]:
    """``count`` distinct tokens of the bench issuer: each its own ``sub`` (workload) and ``jti``, a day's exp."""
    now = int(time.time())
    return [jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": f"bench-{tag}-{alg.lower()}-{i}",
                        "team": "bench-payments", "jti": secrets.token_hex(8), "iat": now - 5, "exp": now + 86400},
                       private, algorithm=alg) for i in range(count)]


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: dict[str, Any] | None,
                auth: dict[str, str] | None = None, want: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
    async with session.request(method, url, json=body, headers=auth or {}) as resp:
        answer = await resp.json(content_type=None)
        if resp.status not in want:
            raise SystemExit(f"bench: logins: {method} {url}: {resp.status} {answer}")
        return dict(answer or {})


async def prepare(stack: SealStack, session: aiohttp.ClientSession, pool: int) -> dict[str, Any]:
    """Init the platform; the client-secret identity, the two methods with their roles, the token pools (each
    token logged in once): per kind, its path and its request bodies."""
    url = stack.url
    init = await _call(session, "POST", f"{url}/v1/sys/init", None)
    auth = {"Authorization": f"Bearer {init['token']}"}
    await _call(session, "POST", f"{url}/v1/policies", {"name": "bench-read", "rules": [
        {"effect": "allow", "paths": ["secrets/bench/**"], "capabilities": ["read", "list"]}]}, auth)
    svc = await _call(session, "POST", f"{url}/v1/identities", {
        "name": "bench-svc", "kind": "service", "allowed_scopes": ["secrets:read"]}, auth)
    await _call(session, "POST", f"{url}/v1/bindings", {"policy": "bench-read", "identity_id": svc["id"]}, auth)
    kinds: dict[str, dict[str, Any]] = {"client-secret": {
        "path": "/v1/auth/token",
        "bodies": [json.dumps({"client_id": svc["client_id"], "client_secret": svc["client_secret"],
                               "scopes": ["secrets:read"]})]}}
    tag = secrets.token_hex(3)
    for kind, alg, private in (("jwt RS256", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
                               ("jwt ES256", "ES256", ec.generate_private_key(ec.SECP256R1()))):
        method = f"bench-{alg.lower()}"
        await _call(session, "POST", f"{url}/v1/auth/methods", {"name": method, "type": "jwt", "config": {
            "issuer": ISSUER, "public_keys": [_pem(private)], "audiences": [AUDIENCE]}}, auth)
        await _call(session, "PUT", f"{url}/v1/auth/methods/{method}/roles/bench", {
            "bound_audiences": [AUDIENCE], "bound_claims": {"team": ["bench-*"]}, "scopes": ["secrets:read"],
            "policies": ["bench-read"], "ttl": "15m"}, auth)
        tokens = mint_pool(private, alg, pool, tag)
        bodies = [json.dumps({"role": "bench", "jwt": t}) for t in tokens]
        kinds[kind] = {"path": f"/v1/auth/methods/{method}/login", "bodies": bodies}
        await first_logins(session, url + kinds[kind]["path"], bodies)
    return kinds


async def first_logins(session: aiohttp.ClientSession, url: str, bodies: list[str]) -> None:
    """One login per token: each ``sub``'s external identity made before anything is timed."""
    sem = asyncio.Semaphore(16)

    async def first(body: str) -> None:
        async with sem, session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status != 200:
                raise SystemExit(f"bench: logins: a first login: {resp.status} {await resp.text()}")

    await asyncio.gather(*(first(b) for b in bodies))


async def drive(wrk: Wrk, url: str, kind: dict[str, Any], clients: int, duration: float) -> dict[str, Any]:
    """wrk on ``kind``'s path, its bodies cycled from a file only this user reads (they are credentials)."""
    with tempfile.NamedTemporaryFile("w", suffix=".bodies", delete=False) as f:
        f.write("\n".join(kind["bodies"]) + "\n")
    try:
        return await wrk(url, {}, "POST", [kind["path"]], f"@{f.name}", clients, duration)
    finally:
        os.unlink(f.name)


class CpuMeter:
    """CPU seconds spent by the platform's process and by the PostgreSQL backends serving its database (their
    command line names it), between ``start`` and ``stop``: what a login costs, whatever else the machine is
    doing — a throughput ratio moves with the load beside it, CPU per login much less."""

    def __init__(self, pid: int, database: str) -> None:
        self.pid, self.database = pid, database
        self._before: dict[int, float] = {}

    def _read(self) -> dict[int, float]:
        seen: dict[int, float] = {}
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or ())
            if proc.info["pid"] == self.pid or (cmd.startswith("postgres:") and f" {self.database} " in cmd):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    seen[proc.info["pid"]] = times.user + times.system
        return seen

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> tuple[float, float]:
        """(the platform's CPU seconds, PostgreSQL's) since ``start``."""
        after = self._read()
        spent = {pid: cpu - self._before.get(pid, 0.0) for pid, cpu in after.items()}
        return spent.pop(self.pid, 0.0), sum(spent.values())


def _summary(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rps = [r["rps"] for r in runs]
    return {"kind": kind, "rps": round(statistics.fmean(rps), 1), "rounds_rps": rps,
            # how far its rounds differ (max - min over the mean): the noise a ratio must beat
            "spread": round((max(rps) - min(rps)) / statistics.fmean(rps), 3) if len(rps) > 1 and any(rps) else None,
            "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 2),
            "server_us": round(statistics.median(r["server_us"] for r in runs)),
            "postgres_us": round(statistics.median(r["postgres_us"] for r in runs)),
            "requests": sum(r["requests"] for r in runs), "errors": sum(r["errors"] for r in runs)}


async def measure(args: argparse.Namespace, session: aiohttp.ClientSession, wrk: Wrk) -> list[dict[str, Any]]:
    """The section: one row per kind (client-secret first), ratios to the client-secret row."""
    if getattr(args, "logins_short", False):
        duration, warmup, rounds, pool = 1.0, 0.0, 1, 20
    else:
        duration, warmup, rounds, pool = args.duration, args.warmup, args.login_rounds, args.login_pool
    load_before = os.getloadavg()
    print(f"bench: logins: embedded platform, a client-secret identity, two jwt methods (pinned RS256 and "
          f"ES256 keys), {pool} tokens each, each logged in once ...", flush=True)
    async with embedded_stack("logins", session, {"COFFER_RATE_LIMITS": RATE_LIMITS}) as (stack, dsn):
        kinds = await prepare(stack, session, pool)
        assert stack.proc is not None
        meter = CpuMeter(stack.proc.pid, dsn.rsplit("/", 1)[1])
        samples: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for rnd in range(rounds):
            for kind in KINDS[rnd % len(KINDS):] + KINDS[:rnd % len(KINDS)]:  # the order turns every round
                await settle(dsn, f"logins: {kind}", None)
                print(f"bench: logins: round {rnd + 1}/{rounds}: {kind}: "
                      f"{f'warm-up {warmup:.0f}s, then ' if warmup else ''}{duration:.0f}s "
                      f"at {args.clients} clients ...", flush=True)
                if warmup:
                    await drive(wrk, stack.url, kinds[kind], args.clients, warmup)
                meter.start()
                sample = await drive(wrk, stack.url, kinds[kind], args.clients, duration)
                server, pg = meter.stop()
                done = max(sample["requests"], 1)
                samples[kind].append({**sample, "server_us": server / done * 1e6, "postgres_us": pg / done * 1e6})
    rows = [_summary(kind, samples[kind]) for kind in KINDS]
    base = rows[0]["rps"]
    for row in rows:
        row["ratio_client_secret"] = round(row["rps"] / base, 3) if base else None
        row.update({"clients": args.clients, "duration": duration, "warmup": warmup, "rounds": rounds,
                    "pool": pool, "loadavg_before": load_before, "loadavg_after": os.getloadavg()})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    r0 = rows[0]
    print(f"\nLogins (issue #30): embedded, {r0['clients']} clients, {r0['duration']:.0f}s per kind, "
          f"{r0['rounds']} round(s) (order turning), logins/s the mean of the rounds, p50/p99 their median; "
          f"JWT: pinned keys, {r0['pool']} distinct tokens per algorithm; load average "
          f"{r0['loadavg_before'][0]:.2f} before, {r0['loadavg_after'][0]:.2f} after, {os.cpu_count()} cores\n")
    print("| kind | logins/s | × client-secret | target | p50 ms | p99 ms | rounds' spread | errors "
          "| platform CPU µs/login | PostgreSQL CPU µs/login |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        target = "-" if r is r0 else f"≥ {TARGET}"
        spread = "-" if r["spread"] is None else f"{r['spread']:.0%}"
        print(f"| {r['kind']} | {r['rps']} | {r['ratio_client_secret']} | {target} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {spread} | {r['errors']} | {r['server_us']} | {r['postgres_us']} |")
    verdicts = []
    for r in rows[1:]:
        ratio = r["ratio_client_secret"]
        verdict = f"{r['kind']} {ratio} × client-secret: " + ("meets" if ratio and ratio >= TARGET else "BELOW")
        if r0["rounds"] < 2:
            verdict += " (one round: a smoke run, not a measurement)"
        verdicts.append(verdict + f" the {TARGET} target")
    print("\ntargets: " + "; ".join(verdicts))


async def main(args: argparse.Namespace, wrk: Wrk) -> None:
    """``python -m bench.run --only logins``: the section alone; its table, and JSON in bench/results/."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.clients * 2)) as session:
        rows = await measure(args, session, wrk)
    print_table(rows)
    out = ROOT / "bench" / "results" / f"logins-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "logins": rows}, indent=1))
    print(f"\nbench: wrote {out.relative_to(ROOT)}")
