"""``make fuzz``: the whole API under schemathesis, as an operator who just started Coffer would run it.

Starts the platform in one process (embedded mode) on a fresh PostgreSQL
database, initialises it, and runs schemathesis against its OpenAPI
description as the root admin: every check but ``unsupported_method`` (the
contract answers an undeclared method with 400 ``invalid_request``: the
vocabulary has no 405), plus ``error_is_the_envelope``
(tests/e2e/schemathesis_hooks.py), with the stateful phase following the
links the description declares. Prints the number of cases, failures and the
time it took; exits non-zero on any failure or when fewer cases than asked
for were generated.

    python -m tests.fuzz [--max-examples 250] [--seed 7] [--min-cases 10000] [--workers 2]

Three operations are left out, each for a reason that is not the fuzzer's to
find: ``PUT /v1/sys/maintenance`` (enabling it closes the API on purpose),
``POST /v1/sys/kms:rotate`` and ``POST /v1/auth/keys:rotate`` (slow by
design — every data key re-wrapped — and tested on their own).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("COFFER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
EXCLUDED = ("put_v1_sys_maintenance", "post_v1_sys_kms_rotate", "post_v1_auth_keys_rotate")


def schemathesis_command(url: str, token: str, *, max_examples: int, seed: int,
                         phases: str = "examples,coverage,fuzzing,stateful", workers: str = "2") -> list[str]:
    """schemathesis against ``url``'s description as ``token``'s holder: every check but the 405 one, ours
    added by ``SCHEMATHESIS_HOOKS=tests.e2e.schemathesis_hooks`` (see ``schemathesis_env``)."""
    return [str(Path(sys.executable).with_name("schemathesis")), "--config-file",
            str(ROOT / "tests" / "schemathesis.toml"), "run", f"{url}/v1/openapi.json",
            "--header", f"Authorization: Bearer {token}", "--max-examples", str(max_examples),
            "--seed", str(seed), "--phases", phases, "--workers", workers,
            "--exclude-checks", "unsupported_method", "--continue-on-failure", "--no-color",
            "--suppress-health-check", "all", "--request-timeout", "30",
            *(a for op in EXCLUDED for a in ("--exclude-operation-id", op))]


def schemathesis_env() -> dict[str, str]:
    return {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks", "PYTHONPATH": str(ROOT)}


def cases_of(output: str) -> int:
    found = re.search(r"(\d+) generated", output)
    return int(found[1]) if found else 0


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/v1/sys/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise SystemExit(f"fuzz: the platform exited ({proc.returncode})")
        if await asyncio.to_thread(_healthy, url):
            return
        await asyncio.sleep(0.3)
    raise SystemExit("fuzz: the platform did not become healthy")


def post_json(url: str, body: dict[str, object] | None = None) -> dict[str, object]:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return dict(json.loads(r.read()))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=250)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-cases", type=int, default=10_000)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--phases", default="examples,coverage,fuzzing,stateful")
    args = parser.parse_args()

    db = f"coffer_fuzz_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = Path(tempfile.mkdtemp(prefix="coffer-fuzz-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update({"PYTHONPATH": str(ROOT), "COFFER_HTTP_PORT": str(port), "COFFER_DATA_DIR": str(data),
                "COFFER_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{db}", "COFFER_LOG_LEVEL": "error",
                # the fuzzer is one client sending thousands of requests a minute
                "COFFER_RATE_LIMITS": "read=1000000/s,write=1000000/s,pki=1000000/s,auth=1000000/s"})
    platform = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.embedded", cwd=ROOT, env=env,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
    started = time.monotonic()
    try:
        await wait_healthy(url, platform)
        init = await asyncio.to_thread(post_json, f"{url}/v1/sys/init")
        print(f"fuzz: platform on {url}; running schemathesis (seed {args.seed}, {args.max_examples} examples per "
              f"operation, phases {args.phases}) ...", flush=True)
        command = schemathesis_command(url, str(init["token"]), max_examples=args.max_examples, seed=args.seed,
                                       phases=args.phases, workers=args.workers)
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=schemathesis_env())
        assert proc.stdout is not None
        lines: list[str] = []
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            print(line, flush=True)
        await proc.wait()
    finally:
        platform.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(platform.wait(), 15)
        except TimeoutError:
            platform.kill()
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()
        shutil.rmtree(data, ignore_errors=True)
    text = "\n".join(lines)
    cases = cases_of(text)
    failures = re.search(r"(\d+) failures?\b", text.split("SUMMARY")[-1]) if "SUMMARY" in text else None
    took = time.monotonic() - started
    print(f"\nfuzz: {cases} cases, {failures[1] if failures else 0} failures, schemathesis exit {proc.returncode}, "
          f"{took:.0f} s in all")
    if proc.returncode != 0:
        return 1
    if cases < args.min_cases:
        print(f"fuzz: fewer cases than the {args.min_cases} asked for")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
