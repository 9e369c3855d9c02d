"""What ``make chaos`` runs on: a RabbitMQ node and a PostgreSQL cluster of its own (never the machine's
shared ones), and Coffer's processes under a supervisor that restarts whatever dies, as systemd would.

All of it binds to 127.0.0.1 only and is removed at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def broker_port() -> int:
    """A free port whose RabbitMQ distribution port (port + 20000) is free too."""
    while True:
        port = 20000 + secrets.randbelow(25000)
        try:
            for p in (port, port + 20000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port


def _as(user: str) -> list[str]:
    """Run a command as ``user`` (RabbitMQ refuses to run its node as root)."""
    return ["runuser", "-u", user, "--"] if os.geteuid() == 0 else ["sudo", "-E", "-u", user]


def _pg_version() -> str:
    return sorted(os.listdir("/etc/postgresql"), key=float)[-1]


async def wait_for(what: str, probe: Callable[[], bool], timeout: float) -> float:
    """Poll ``probe`` (run in a thread) every 0.2 s until true; seconds it took."""
    started = time.monotonic()
    while not await asyncio.to_thread(probe):
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"chaos: {what} not up after {timeout:.0f}s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


class OwnBroker:
    """A RabbitMQ node of the runner's own: its node name, ports, data and log directories; no plugins."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.node = f"coffer-chaos-{port}@localhost"
        self.dir = Path(tempfile.mkdtemp(prefix="coffer-chaos-rabbit-"))
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{port}\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        shutil.chown(self.dir, "rabbitmq")
        for p in self.dir.iterdir():
            shutil.chown(p, "rabbitmq")
        self.env = {**os.environ, "HOME": "/var/lib/rabbitmq", "RABBITMQ_NODENAME": self.node,
                    "RABBITMQ_NODE_PORT": str(port), "RABBITMQ_DIST_PORT": str(port + 20000),
                    "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
                    "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"), "RABBITMQ_LOG_BASE": str(self.dir / "log"),
                    "RABBITMQ_PID_FILE": str(self.dir / "pid")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"amqp://guest:guest@127.0.0.1:{port}/"

    def _ctl(self, *args: str, timeout: float = 60) -> bool:
        run = subprocess.run([*_as("rabbitmq"), str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
                             env=self.env, cwd=self.dir, capture_output=True, timeout=timeout)
        return run.returncode == 0

    def _spawn(self) -> None:
        self.proc = subprocess.Popen([*_as("rabbitmq"), str(RABBIT_BIN / "rabbitmq-server")], env=self.env,
                                     cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def start(self) -> float:
        self._spawn()
        return await wait_for(f"RabbitMQ {self.node}", lambda: self._ctl("await_startup", "--timeout", "2",
                                                                          timeout=10), 90)

    async def stop(self) -> None:
        await asyncio.to_thread(self._ctl, "shutdown")
        if self.proc:
            await asyncio.to_thread(self.proc.wait)

    async def restart(self) -> float:
        """Stop the node (as ``systemctl restart`` would) and start it again; seconds until it answers."""
        started = time.monotonic()
        await self.stop()
        await self.start()
        return time.monotonic() - started

    async def remove(self) -> None:
        if self.proc and self.proc.poll() is None:
            await self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnPostgres:
    """A PostgreSQL cluster of the runner's own (``pg_createcluster``), trust auth on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port, self.version, self.name = port, _pg_version(), f"coffer_chaos_{port}"
        self.dsn = f"postgresql://postgres@127.0.0.1:{port}/coffer"

    def _ctl(self, *args: str) -> None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, *args],
                       check=True, capture_output=True)

    def _ready(self) -> bool:
        return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)]).returncode == 0

    def _create(self) -> None:
        subprocess.run(["pg_createcluster", self.version, self.name, "-p", str(self.port), "-o", "max_connections=300",
                        "--", "--auth-host=trust", "--auth-local=trust"], check=True, capture_output=True)
        self._ctl("start")  # listens on localhost only, Debian's default

    async def start(self) -> float:
        await asyncio.to_thread(self._create)
        return await wait_for(f"PostgreSQL {self.name}", self._ready, 60)

    async def restart(self) -> float:
        """``pg_ctlcluster … restart`` (fast: open transactions are rolled back, connections cut)."""
        started = time.monotonic()
        await asyncio.to_thread(self._ctl, "restart", "-m", "fast")
        await wait_for(f"PostgreSQL {self.name}", self._ready, 60)
        return time.monotonic() - started

    async def remove(self) -> None:
        await asyncio.to_thread(subprocess.run, ["pg_dropcluster", "--stop", self.version, self.name],
                                capture_output=True)


@dataclass
class Proc:
    name: str
    module: str
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    """Coffer's processes; one that dies is started again after ``delay`` (systemd's ``Restart=always``)."""

    def __init__(self, env: dict[str, str], log_dir: Path, delay: float = 0.2) -> None:
        self.env, self.log_dir, self.delay = env, log_dir, delay
        self.procs: dict[str, Proc] = {}
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def add(self, name: str, module: str, **env: str) -> None:
        self.procs[name] = Proc(name, module, {**self.env, **env})

    def _spawn(self, proc: Proc) -> None:
        log = (self.log_dir / f"{proc.name}.log").open("ab")
        proc.popen = subprocess.Popen([sys.executable, "-m", proc.module], env=proc.env, cwd=ROOT,
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> None:
        for proc in self.procs.values():
            self._spawn(proc)
        self._watch = asyncio.create_task(self._supervise())

    async def _supervise(self) -> None:
        while not self._stopping:
            for proc in self.procs.values():
                if proc.popen is not None and proc.popen.poll() is not None and not self._stopping:
                    await asyncio.sleep(self.delay)
                    proc.restarts.append(time.monotonic())
                    self._spawn(proc)
            await asyncio.sleep(0.05)

    def kill(self, name: str) -> None:
        """``kill -9``: no shutdown handlers, no goodbyes."""
        popen = self.procs[name].popen
        assert popen is not None
        popen.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch:
            await self._watch
        for proc in self.procs.values():
            if proc.popen and proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in self.procs.values():
            if proc.popen:
                try:
                    await asyncio.to_thread(proc.popen.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.popen.kill()


async def healthy(session: aiohttp.ClientSession, urls: list[str], timeout: float = 90) -> None:
    """Every gateway answers ``/v1/sys/health`` with 200 (all services up)."""
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending:
        url = pending[0]
        try:
            async with session.get(f"{url}/v1/sys/health", timeout=aiohttp.ClientTimeout(total=3)) as resp:
                if resp.status == 200:
                    pending.pop(0)
                    continue
        except (aiohttp.ClientError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"chaos: {url} not healthy after {timeout:.0f}s")
        await asyncio.sleep(0.3)
