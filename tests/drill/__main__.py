"""``make backup-drill``: a backup taken under writes, restored into a fresh installation, and checked.

    python -m tests.drill [--mode embedded|distributed] [--keep]

1. starts a platform as an operator does (``python -m services.embedded`` with its embedded PostgreSQL
   under a data directory of its own; or ``python -m services.distributed`` on a fresh database and
   RabbitMQ vhost) and writes a known set across every service (tests/drill/known.py);
2. backs it up with ``python -m services.admin backup`` (another process) while a client keeps writing;
3. deletes a tenant on the source, after the backup;
4. restores the backup with ``python -m services.admin restore --deleted-since <the source>`` into a
   fresh database and an empty data directory — the restore prints its own checks (counts against the
   manifest, the audit chains, a sample of secrets read back);
5. starts a platform on the restored installation and reads everything back through the gateway: every
   secret version, the writes acknowledged before the backup began (and no write it did not see half of),
   the CA signing again, the webhook, a lease from the restored engine, the deleted tenant's secrets
   answering ``encryption_error``, a new write (the bigserials go on) and the audit chain.

Exit status 0 when all of it holds. Everything it makes is removed at the end (``--keep``: the directory
stays, its path printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pyrage

from services.provision.installation import amqp_user, default_prefix, pg_role
from shared.registry import SERVICES
from tests.chaos.infra import healthy
from tests.conftest import AMQP_BASE, PG_ADMIN, ROOT, Api, free_port, rabbitmqctl
from tests.drill.known import Known, check_known_set, forget_redis_admin, keep_writing, write_known_set


def say(text: str) -> None:
    print(f"drill: {text}", flush=True)


class Place:
    """Where one installation lives: its data directory, and (distributed) its database and vhost."""

    def __init__(self, tmp: Path, name: str, mode: str) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.mode = mode
        self.database = f"coffer_drill_{name}_{secrets.token_hex(3)}"
        self.vhost = self.database

    @property
    def dsn(self) -> str:
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + self.database

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
        env.update(PYTHONPATH=str(ROOT), COFFER_DATA_DIR=str(self.dir), COFFER_LOG_LEVEL="warning",
                   COFFER_OUTBOUND_ALLOWED_CIDRS="127.0.0.0/8", COFFER_OUTBOUND_ALLOW_HTTP="true",
                   COFFER_ENGINE_ALLOWED_CIDRS="127.0.0.0/8")
        if self.mode == "distributed":
            env.update(COFFER_DATABASE_URL=self.dsn, COFFER_AMQP_URL=f"{AMQP_BASE}/{self.vhost}")
        return env

    async def make(self) -> None:
        if self.mode == "distributed":
            admin = await asyncpg.connect(PG_ADMIN)
            await admin.execute(f'CREATE DATABASE "{self.database}"')
            await admin.close()
            rabbitmqctl("add_vhost", self.vhost)
            rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")

    async def remove(self) -> None:
        if self.mode != "distributed":
            return
        with contextlib.suppress(Exception):
            rabbitmqctl("delete_vhost", self.vhost)
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            roles = [pg_role(default_prefix(self.database, self.vhost), s) for s in SERVICES]
            for (role,) in await admin.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", roles):
                await admin.execute(f'DROP ROLE "{role}"')  # the provisioned roles: their database is gone
        finally:
            await admin.close()
        prefix = default_prefix(self.database, self.vhost)  # the provisioned users' names (no schema prefix set)
        for service in SERVICES:
            with contextlib.suppress(Exception):
                rabbitmqctl("delete_user", amqp_user(prefix, service))


def _log_file(path: Path) -> Any:
    return path.open("ab")


@contextlib.asynccontextmanager
async def platform(place: Place, label: str) -> AsyncIterator[str]:
    """The platform of ``place`` as its own process(es) until the block ends; its URL."""
    port = free_port()
    command = ["-m", "services.embedded"] if place.mode == "embedded" else ["-m", "services.distributed"]
    log = _log_file(place.dir.parent / f"{label}.log")
    proc = await asyncio.create_subprocess_exec(sys.executable, *command, stdout=log, stderr=log,
                                                env={**place.env(), "COFFER_HTTP_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            began = time.monotonic()
            await healthy(session, [url], timeout=120)
        say(f"{label}: {place.mode} platform up at {url} in {time.monotonic() - began:.1f}s (log: {log.name})")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
        log.close()


async def admin(place: Place, label: str, *args: str) -> None:
    """``python -m services.admin`` in another process, its lines printed as they come."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.admin", *args, env=place.env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    async for line in proc.stdout:
        print(f"  {label} | {line.decode().rstrip()}", flush=True)
    if await proc.wait() != 0:
        raise SystemExit(f"drill: {label} failed (exit status {proc.returncode})")


async def login(session: aiohttp.ClientSession, url: str, client: dict[str, str]) -> Api:
    api = Api(url, session)
    status, body, _ = await api.request("POST", "/v1/auth/token", token=None, json=client)
    assert status == 200, body
    api.token = body["access_token"]
    return api


async def back_up_under_writes(api: Api, known: Known, source: Place, out: Path,
                               recipient: str) -> tuple[int, list[int]]:
    """The backup, while a client writes; (writes acknowledged before it began, every acknowledged one)."""
    stop, under_way, acked = asyncio.Event(), asyncio.Event(), list[int]()
    writer = asyncio.create_task(keep_writing(api, known.root, stop, acked, under_way))
    await under_way.wait()
    before = len(acked)
    try:
        await admin(source, "backup", "backup", "--recipient", recipient, "--out", str(out))
    finally:
        stop.set()
        await writer
    say(f"{len(acked) - before} writes were acknowledged while the backup ran ({before} before it began)")
    return before, acked


async def check_load(api: Api, root: str, before: int, acked: list[int]) -> str:
    """The writes of the load: every one acknowledged before the backup began is there, and what is there
    is whole (its own value); the snapshot falls somewhere among those made during the backup."""
    there = []
    for n in acked:
        status, body, _ = await api.request("GET", f"/v1/secrets/load/{n}", headers={"X-Tenant-ID": root})
        if status == 200:
            assert body["value"] == f"load-{n}", (n, body)
            there.append(n)
        else:
            assert status == 404, (n, status, body)
    assert set(acked[:before]) <= set(there), "a write acknowledged before the backup began is missing"
    return (f"load: {len(there)} of the {len(acked)} acknowledged writes are in the backup: all {before} made "
            f"before it began, and {len(there) - before} of those made while it ran (the snapshot's instant)")


async def drill(mode: str, keep: bool) -> int:
    began = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="coffer-drill-"))
    source, restored = Place(tmp, "source", mode), Place(tmp, "restored", mode)
    identity = pyrage.x25519.Identity.generate()
    key_file = tmp / "drill.agekey"
    key_file.touch(0o600)
    key_file.write_text(f"# the drill's age identity\n{identity}\n")
    backup_file = tmp / "drill-backup.age"
    known: Known | None = None
    try:
        await source.make()
        await restored.make()
        async with aiohttp.ClientSession() as session:
            async with platform(source, "source") as url:
                api = Api(url, session)
                status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
                assert status == 201, init
                client = {"client_id": init["client_id"], "client_secret": init["client_secret"]}
                api.token = init["token"]
                known = await write_known_set(api, init["tenant_id"])
                say(f"wrote the known set: {len(known.secrets)} secrets of 3 versions in 3 tenants, a CA and a "
                    "certificate, a webhook" + (", a Redis lease engine and role" if known.engine else
                                               " (no Redis on 127.0.0.1:6379: no lease engine)"))
                before, acked = await back_up_under_writes(api, known, source, backup_file,
                                                           str(identity.to_public()))
                status, _, _ = await api.request("DELETE", f"/v1/tenants/{known.doomed}")
                assert status == 204
                say(f"deleted tenant {known.doomed} on the source, after the backup")
                deleted_since = source.dsn if mode == "distributed" else str(source.dir)
                await admin(restored, "restore", "restore", str(backup_file), "--identity", str(key_file),
                            "--deleted-since", deleted_since)
            async with platform(restored, "restored") as url:
                api = await login(session, url, client)
                lines = [await check_load(api, known.root, before, acked)]
                lines += await check_known_set(api, known, deleted={known.doomed})
        say("restored, and read back through the restored platform's gateway:")
        for line in lines:
            print(f"  {line}", flush=True)
        say(f"passed in {time.monotonic() - began:.0f}s")
        return 0
    finally:
        if known is not None:
            await forget_redis_admin(known)
        await source.remove()
        await restored.remove()
        if keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.drill", description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--keep", action="store_true", help="keep the drill's directory (logs, the backup)")
    args = parser.parse_args()
    return asyncio.run(drill(args.mode, args.keep))


if __name__ == "__main__":
    sys.exit(main())
