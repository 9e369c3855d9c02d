"""``python -m services.distributed`` (``make run-distributed``): each service its own process.

Starts ``python -m services.<name>`` for the five services against
``COFFER_AMQP_URL`` and ``COFFER_DATABASE_URL``, prints what it started and
where the gateway listens, waits until the gateway's health is ok, and stops
them all on Ctrl-C (or when one dies). Replicas: ``--replicas secrets=2``.

Those two URLs are an operator's: first it gives every service its own
RabbitMQ user and PostgreSQL role with fresh passwords (``services.provision``),
and each process gets only its own, never the operator's. ``--shared-credentials``
runs every process with the operator's URLs instead (one trust domain).

The users and roles are this installation's own (named with a prefix derived from
the database and vhost unless ``COFFER_SCHEMA_PREFIX`` is set, and marked): it
refuses to reset those of another installation, or ones no provisioning made,
unless ``--take-over`` (``COFFER_PROVISION_TAKE_OVER=1``).

Seals (``COFFER_SEAL``): ``file`` and the auto seals (``awskms``, ``pkcs11``: each
process unseals its own copy of the keyring by itself). ``shamir`` is refused
before anything starts: it needs the gateway to hand each process its key
(issue #29, item 2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from services.gateway.settings import GatewaySettings
from services.provision import TAKE_OVER_HELP, ensure_database, provision
from shared.custody import CustodyRefused, check
from shared.registry import SERVICES
from shared.runtime import require_distributed


def _health(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=3) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        return dict(json.load(exc))
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", action="append", default=[], metavar="SERVICE=N",
                        help="run N processes of SERVICE (default 1 each)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for health ok")
    parser.add_argument("--shared-credentials", action="store_true",
                        help="don't provision per-service users: every process gets COFFER_AMQP_URL/DATABASE_URL")
    parser.add_argument("--take-over", action="store_true", help=TAKE_OVER_HELP)
    args = parser.parse_args(argv)
    settings = require_distributed(GatewaySettings())  # the operator's URLs, and where the gateway listens
    try:  # COFFER_SEAL=shamir (it needs the key hand-over of issue #29 item 2), a key file under another seal ...
        check(settings, distributed=True)
    except CustodyRefused as refused:
        print(refused.code, file=sys.stderr, flush=True)
        return 2
    replicas = {name: 1 for name in SERVICES}
    for spec in args.replicas:
        name, _, count = spec.partition("=")
        if name not in replicas or not count.isdigit():
            parser.error(f"bad --replicas {spec!r}")
        replicas[name] = int(count)
    if replicas["gateway"] > 1:
        parser.error("several gateways need several ports: start extra ones with COFFER_HTTP_PORT set")

    env = {name: os.environ.copy() for name in SERVICES}
    if args.shared_credentials:
        assert settings.database_url is not None
        asyncio.run(ensure_database(settings.database_url.get_secret_value()))
    else:
        creds = asyncio.run(provision(settings, take_over=args.take_over or None))
        users = {s: c.amqp_user for s, c in creds.items()}
        for name in SERVICES:
            env[name].update(creds[name].env(users))
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for name, count in replicas.items():
        for i in range(count):
            proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=env[name])
            procs.append((f"{name}#{i + 1}", proc))
            print(f"coffer: started {name} (pid {proc.pid})", flush=True)

    url = f"http://{settings.http_host}:{settings.http_port}"
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    deadline = time.monotonic() + args.wait
    ready = False
    while not stop:
        dead = [(n, p.returncode) for n, p in procs if p.poll() is not None]
        if dead:
            print(f"coffer: {dead[0][0]} exited with {dead[0][1]}; stopping the others", flush=True)
            break
        if not ready:
            health = _health(url)
            if health and health.get("status") == "ok":
                ready = True
                print(f"coffer: all services ok — gateway at {url}/v1 "
                      f"(first time: curl -X POST {url}/v1/sys/init). Ctrl-C to stop.", flush=True)
            elif time.monotonic() > deadline:
                print(f"coffer: not healthy after {args.wait:.0f}s: {health}", flush=True)
                deadline = float("inf")
            elif int(time.monotonic()) % 5 == 0:
                if health and health.get("status") == "sealed":  # an auto seal not open yet: why, not "None"
                    print(f"coffer: sealed ({health.get('type')}): {health.get('reason')} — "
                          f"{health.get('message') or ''}", flush=True)
                else:
                    print(f"coffer: waiting for services ... "
                          f"{health.get('services') if health else 'gateway not up yet'}", flush=True)
        time.sleep(1.0)
    for _, proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for name, proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"coffer: stopped {name}", flush=True)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
