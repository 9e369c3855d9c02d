"""Fixtures: a fresh PostgreSQL database and a fresh RabbitMQ vhost per test run.

Both are real servers on 127.0.0.1 (``.ci/run`` starts them). Nothing here
mocks the broker or the database.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import structlog

from services.platform import Platform
from shared.bus import Bus, InProcessBus, RabbitBus
from shared.logging import PROCESSORS, redact

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("COFFER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("COFFER_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
RUN_ID = secrets.token_hex(4)


#: every log line of the run, rendered; and every secret value a test wrote.
LOG_LINES: list[str] = []
SECRET_VALUES: set[str] = set()


def _collect(_: Any, __: str, event_dict: Any) -> Any:
    LOG_LINES.append(repr(event_dict))  # before redaction: the code itself must not log secrets
    return event_dict


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line() -> Iterator[None]:
    """Collect every structlog line of the run; at the end, no secret value may be in one."""
    redact_at = PROCESSORS.index(redact)
    structlog.configure(
        processors=[*PROCESSORS[:redact_at], _collect, *PROCESSORS[redact_at:],
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(), cache_logger_on_first_use=False)
    yield
    if SECRET_VALUES:
        assert LOG_LINES, "no log line was collected: the check would prove nothing"
    leaked = sorted(v for v in SECRET_VALUES if any(v in line for line in LOG_LINES))
    assert not leaked, f"{len(leaked)} secret values reached a log line"


def remember_secret(value: str) -> str:
    """Register a value a test writes as a secret: it must never be logged."""
    SECRET_VALUES.add(value)
    return value


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(
        ["rabbitmqctl", *args], check=True, capture_output=True, text=True, timeout=120
    ).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
async def pg_dsn() -> AsyncIterator[str]:
    """A database created for this run and dropped after it."""
    name = f"coffer_test_{RUN_ID}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


def _vhost(name: str) -> Iterator[str]:
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield f"{AMQP_BASE}/{name}"
    try:
        rabbitmqctl("delete_vhost", name)
    except subprocess.CalledProcessError:
        pass


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost created for this run (durable queues of old runs can't interfere)."""
    yield from _vhost(f"coffer_test_{RUN_ID}")


@pytest.fixture
def private_amqp() -> Iterator[str]:
    """A vhost for one test, when the run's shared vhost has other tests' consumers on it."""
    yield from _vhost(f"coffer_test_{RUN_ID}_{secrets.token_hex(3)}")


def setting_values(tmp: Path, amqp_url: str | None, pg_dsn: str, **over: Any) -> dict[str, Any]:
    """The settings of a test platform (each service's settings class takes the ones it knows)."""
    values: dict[str, Any] = {
        "http_port": 0,
        "data_dir": tmp,
        "schema_prefix": "t" + secrets.token_hex(3) + "_",
        "database_url": pg_dsn,
        "amqp_url": amqp_url,
        "rpc_timeout": 3.0,
        "health_timeout": 1.5,
        "outbox_poll_interval": 0.2,
        "lifecycle_interval": 0.3,
        # every test client is 127.0.0.1: rate limits are tested on platforms of their own
        "rate_limits": "read=100000/s,write=100000/s,pki=100000/s,auth=100000/s",
        # deliveries go to receivers on this machine, quickly retried
        "outbound_allowed_cidrs": ("127.0.0.0/8",),
        "outbound_allow_http": True,
        "webhook_retry_schedule": "0,0.3,0.3,0.3,0.3",
        "webhook_timeout": 1.0,
        "webhook_poll_interval": 0.1,
        # engines of the lease tests are this machine's PostgreSQL, RabbitMQ and Redis
        "engine_allowed_cidrs": ("127.0.0.0/8",),
        # this machine's PostgreSQL (the lease cluster) may be older than 16: accepted here, refused by default
        "engine_postgresql_legacy": True,
        "lease_sweep_interval": 0.2,
        "engine_timeout": 3.0,
    }
    values.update(over)
    return values


@pytest.fixture(params=["memory", "rabbit"])
async def bus(request: pytest.FixtureRequest, amqp_url: str) -> AsyncIterator[Bus]:
    """Each bus contract test runs on both implementations."""
    b: Bus
    if request.param == "memory":
        b = InProcessBus(rpc_timeout=2.0, retry_delay=0.01, delivery_limit=3)
    else:
        b = RabbitBus(amqp_url, rpc_timeout=2.0, retry_delay=0.01, delivery_limit=3,
                      name=f"test-{secrets.token_hex(3)}")
    await b.start()
    yield b
    await b.close()


class Api:
    """An HTTP client of one running gateway."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session
        self.token: str | None = None

    async def request(self, method: str, path: str, *, token: str | None = "default",
                      **kwargs: Any) -> tuple[int, Any, Any]:
        headers = dict(kwargs.pop("headers", {}) or {})
        use = self.token if token == "default" else token
        if use:
            headers.setdefault("Authorization", f"Bearer {use}")
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as resp:
            raw = await resp.read()
            try:
                body = await resp.json(content_type=None) if raw else None
            except ValueError:
                body = raw
            return resp.status, body, resp.headers


async def start_platform(
    tmp: Path, amqp_url: str | None, pg_dsn: str, *, services: tuple[str, ...] | None = None,
    bus: Bus | None = None, **over: Any
) -> Platform:
    values = setting_values(tmp, amqp_url, pg_dsn, **over)
    kwargs: dict[str, Any] = {"bus": bus}
    if services is not None:
        kwargs["services"] = services
    platform = Platform(values, pg_dsn, name=f"test-{secrets.token_hex(3)}", **kwargs)
    await platform.start()
    return platform


@contextlib.asynccontextmanager
async def own_platform(mode: str, tmp: Path, pg_dsn: str, **over: Any) -> AsyncIterator[Platform]:
    """A platform of a test module's own: on the in-process bus (``embedded``), or on RabbitMQ in a vhost
    of its own (``rabbitmq``), so that its consumers meet no other module's."""
    vhost = None
    if mode == "rabbitmq":
        vhost = f"coffer_{tmp.name[:20]}_{secrets.token_hex(3)}"
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    p = await start_platform(tmp, f"{AMQP_BASE}/{vhost}" if vhost else None, pg_dsn, **over)
    try:
        yield p
    finally:
        await p.close()
        if vhost:
            rabbitmqctl("delete_vhost", vhost)


async def initialised(platform: Platform, http: aiohttp.ClientSession) -> Api:
    """An admin client of a freshly started platform (``sys/init`` done)."""
    assert platform.url
    api = Api(platform.url, http)
    status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
    assert status == 201, init
    api.token = remember_secret(init["token"])
    remember_secret(init["client_secret"])
    return api


@pytest.fixture(scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(scope="session")
async def platform(
    tmp_path_factory: pytest.TempPathFactory, amqp_url: str, pg_dsn: str
) -> AsyncIterator[Platform]:
    """The whole platform on RabbitMQ + PostgreSQL, initialised once for the run."""
    p = await start_platform(tmp_path_factory.mktemp("platform"), amqp_url, pg_dsn)
    yield p
    await p.close()


@pytest.fixture(scope="session")
async def admin(platform: Platform, http: aiohttp.ClientSession) -> AsyncIterator[dict[str, Any]]:
    """``sys/init`` done once: its answer, plus an ``api`` client holding the admin token."""
    assert platform.url
    api = Api(platform.url, http)
    status, body, _ = await api.request("POST", "/v1/sys/init", token=None)
    assert status == 201, body
    api.token = body["token"]
    yield {**body, "api": api}


@pytest.fixture
async def api(admin: dict[str, Any]) -> Api:
    api: Api = admin["api"]
    return api


def start_moto(port: int) -> subprocess.Popen[bytes]:
    """moto's server (AWS KMS, Secrets Manager) on 127.0.0.1:``port``, once it answers."""
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto's server did not start")
