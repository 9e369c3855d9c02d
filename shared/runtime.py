"""Running a service: one lifecycle for every service, the gateway included.

Each service declares a ``ServiceSpec`` in its ``app.py`` (the composition
root): its name, migrations, settings class, and a *lifespan* — an async
context manager (aiohttp's ``cleanup_ctx``, nameko's setup/start/stop) that
builds the service from its ``ServiceDeps``, yields what it offers
(``Running``: RPC handlers, an HTTP address), and tears it down on exit.
``ServiceRuntime`` wires a spec to a bus and a database the same way in
embedded mode (five runtimes in one process) and distributed mode (one per
process, ``python -m services.<name>``); nothing outside a service's package
knows what the service does.

Every service also gets, from the runtime: ``<service>.ping`` (up and its
storage answers), ``<service>.rewrap`` (KEK rotation), the outbox relay, and
the destruction of a deleted tenant's rows in the tables it lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog

from shared.bus import Bus, RpcHandler, create_bus
from shared.config import Settings
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.contracts.system import PingResult, RewrapResult
from shared.crypto import LocalKms
from shared.db import OutboxRelay, SealedColumns, create_pool, inbox, migrate, rewrap_all, sealed_keys
from shared.errors import ServiceUnavailable
from shared.logging import configure
from shared.outbound import OutboundPolicy, PlatformEndpoints, platform_endpoints
from shared.registry import rpc_name

log = structlog.get_logger("coffer.runtime")
S = TypeVar("S", bound=Settings)


@dataclass
class ServiceDeps:
    """What a service is built from (passed down, never global)."""

    name: str
    settings: Settings
    bus: Bus
    pool: asyncpg.Pool
    kms: LocalKms
    schema: str
    relay: OutboxRelay
    #: the platform's own endpoints (database, broker, gateway): no outbound call may reach them
    platform: PlatformEndpoints = field(default_factory=PlatformEndpoints)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def settings_of(self, cls: type[S]) -> S:
        """The service's own settings (the class its spec names)."""
        if not isinstance(self.settings, cls):
            raise TypeError(f"{self.name} runs with {type(self.settings).__name__}, not {cls.__name__}")
        return self.settings

    def outbound(self, cidrs: tuple[str, ...] | None = None, *, allow_http: bool | None = None,
                 public: bool = True) -> OutboundPolicy:
        """The outbound guard's policy for calls to tenant-chosen addresses: the operator's allow-list
        (``COFFER_OUTBOUND_*`` unless given), never the platform's own endpoints."""
        return OutboundPolicy.from_cidrs(
            self.settings.outbound_allowed_cidrs if cidrs is None else cidrs,
            self.settings.outbound_allow_http if allow_http is None else allow_http,
            public=public, platform=self.platform)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background job for the life of the service (cancelled on close)."""
        self.tasks.append(asyncio.create_task(coro, name=name))


@dataclass
class Running:
    """What a started service offers."""

    #: the methods it answers on the bus (``<rpc name>.<method>``)
    rpc: Mapping[str, RpcHandler] = field(default_factory=dict)
    #: where it answers HTTP, if it does (the gateway), and its application (for tests)
    url: str | None = None
    app: Any = None


Lifespan = Callable[[ServiceDeps], AbstractAsyncContextManager[Running]]


@dataclass
class ServiceSpec:
    """A service: its name, migrations, settings and lifespan, and what the runtime does for it."""

    name: str
    migrations: Path
    lifespan: Lifespan | None = None
    settings: type[Settings] = Settings
    #: methods other services than the gateway may call, and which (every other method: the gateway
    #: only); in distributed mode the bus refuses requests from any other service's user
    rpc_callers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: tables holding tenant data (each with a ``tenant_id`` column), emptied of a tenant's rows
    #: in this order when ``tenant.deleted`` arrives (children before parents).
    tenant_tables: tuple[str, ...] = ()
    #: where the service keeps sealed values (beyond its named keys): KEK rotation re-wraps them all
    sealed: tuple[SealedColumns, ...] = ()


class ServiceRuntime:
    """One running service."""

    def __init__(self, spec: ServiceSpec, settings: Settings, bus: Bus, kms: LocalKms, dsn: str, *,
                 platform: PlatformEndpoints | None = None) -> None:
        self.spec = spec
        self.platform = platform
        self.settings = settings
        self.bus = bus
        self.kms = kms
        self.dsn = dsn
        self.schema = settings.schema_for(spec.name)
        self.pool: asyncpg.Pool | None = None
        self.relay: OutboxRelay | None = None
        self.deps: ServiceDeps | None = None
        self.running: Running | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> Running:
        if self.platform is None:
            self.platform = await platform_endpoints(self.settings.platform_targets(self.dsn))
        self.pool = await create_pool(self.dsn, self.schema)
        async with self.pool.acquire() as conn:
            await migrate(conn, self.schema, self.spec.migrations)
        self.relay = OutboxRelay(
            self.pool, self.bus, self.schema, poll_interval=self.settings.outbox_poll_interval
        )
        self.deps = ServiceDeps(
            name=self.spec.name, settings=self.settings, bus=self.bus, pool=self.pool,
            kms=self.kms, schema=self.schema, relay=self.relay, platform=self.platform,
        )
        running = Running()
        if self.spec.lifespan is not None:
            running = await self._stack.enter_async_context(self.spec.lifespan(self.deps))
        if {"ping", "rewrap"} & set(running.rpc):  # health and KEK rotation are the runtime's, for all alike
            raise RuntimeError(f"{self.spec.name}: 'ping' and 'rewrap' are the runtime's methods")
        handlers: dict[str, RpcHandler] = {**running.rpc, "rewrap": self._rewrap, "ping": self._ping}
        await self.bus.serve(rpc_name(self.spec.name), handlers, callers=self.spec.rpc_callers)
        if self.spec.tenant_tables:
            await self.bus.subscribe(f"{self.spec.name}-tenants", ["tenant.deleted"], self._tenant_deleted)
        await self.relay.start()
        self.running = running
        log.info("service_started", service=self.spec.name, schema=self.schema)
        return running

    async def _ping(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        assert self.relay is not None
        try:
            backlog = await self.relay.backlog()
        except Exception:  # noqa: BLE001 - the caller only needs to know it is not ok
            raise ServiceUnavailable(f"{self.spec.name} storage is unavailable") from None
        return PingResult(service=self.spec.name, outbox_backlog=backlog).model_dump()

    async def _tenant_deleted(self, event: Event, ctx: RequestContext) -> None:
        """Destroy the deleted tenant's data in this service's schema, once (inbox)."""
        assert self.pool is not None
        tenant_id = event.data.get("tenant_id") or event.tenant_id
        if event.type != "tenant.deleted" or not isinstance(tenant_id, str) or not tenant_id:
            return
        async with self.pool.acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, f"{self.spec.name}-tenants", event.id):
                return
            removed = 0
            for table in self.spec.tenant_tables:
                status = await conn.execute(f'DELETE FROM "{table}" WHERE tenant_id = $1', tenant_id)
                removed += int(status.split()[-1])
        log.info("tenant_data_destroyed", service=self.spec.name, tenant_id=tenant_id, rows=removed)

    async def _rewrap(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """Re-wrap every data key of this service not under the active KEK (values untouched)."""
        assert self.pool is not None
        places = (*self.spec.sealed, sealed_keys.sealed_columns(self.schema))
        moved, unreadable = await rewrap_all(self.pool, self.kms, places)
        return RewrapResult(kek_id=self.kms.active_key_id, rewrapped=moved, unreadable=unreadable).model_dump()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()  # the service's own teardown first (the gateway stops listening)
        if self.deps is not None:
            for task in self.deps.tasks:
                task.cancel()
            await asyncio.gather(*self.deps.tasks, return_exceptions=True)
        if self.relay is not None:
            await self.relay.close()
        if self.pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pool.close(), 5)


def freeze_startup_heap() -> None:
    """Move what start-up made (modules, routes, pools, models) out of the collector's sight.

    Those objects live as long as the process, yet every full collection walked
    them all: under load a gen-2 collection stopped the loop for 48–71 ms in
    the gateway and the secrets service (measured with ``gc.callbacks``), and
    0.7–1.4 ms after this. Garbage made after start-up is collected as before.
    """
    gc.collect()
    gc.freeze()


def install_uvloop() -> None:
    """Use uvloop when it is installed (it is on Linux)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def require_distributed(settings: S) -> S:
    """The settings of a distributed-mode process: RabbitMQ and PostgreSQL are required."""
    missing = [n for n, v in (("COFFER_AMQP_URL", settings.amqp_url),
                              ("COFFER_DATABASE_URL", settings.database_url)) if v is None]
    if missing:
        raise SystemExit(f"distributed mode needs {' and '.join(missing)} (see README, Configuration)")
    return settings


async def run_service(spec: ServiceSpec) -> None:
    """``python -m services.<name>``: one service in its own process until a signal."""
    settings = require_distributed(spec.settings())
    configure(settings.log_level, settings.log_format)
    assert settings.database_url is not None
    if settings.seal != "file":
        await _run_sealed_service(spec, settings)
        return
    bus = create_bus(settings, name=f"coffer-{spec.name}")
    kms = LocalKms.load(settings.key_file, create=True)
    await bus.start()
    runtime = ServiceRuntime(spec, settings, bus, kms, settings.database_url.get_secret_value())
    try:
        running = await runtime.start()
        where = f"listening on {running.url}" if running.url else f"serving RPC '{rpc_name(spec.name)}.*'"
        print(f"coffer {spec.name}: {where} (Ctrl-C to stop)", flush=True)
        freeze_startup_heap()
        await wait_for_signal()
    finally:
        await runtime.close()
        await bus.close()


async def _run_sealed_service(spec: ServiceSpec, settings: Settings) -> None:
    """An auto seal (awskms, pkcs11) in distributed mode: each process unseals its own keyring by itself,
    retrying with backoff while the KMS or HSM is away; the gateway answers sealed meanwhile
    (services/sealed.py). ``shamir`` is refused here: it needs the key hand-over of issue #29 item 2."""
    from shared import custody as custody_mod

    custody_mod.check(settings, distributed=True)  # CustodyRefused (a SystemExit) says why
    custody = custody_mod.Custody(settings)
    custody_mod.install(custody)

    def make_bus() -> Bus:
        return create_bus(settings, name=f"coffer-{spec.name}")

    if spec.name == "gateway":  # the one process with an address: it answers sealed meanwhile
        import importlib

        sealed = importlib.import_module("services.sealed")
        await sealed.run_gateway(spec, settings, custody, make_bus)
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    custody.start()
    print(f"coffer {spec.name}: sealed ({settings.seal}): unsealing ...", flush=True)
    try:
        waiting = asyncio.ensure_future(custody.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (waiting, stopping):
            task.cancel()
        await asyncio.gather(waiting, stopping, return_exceptions=True)
        if stop.is_set():
            return
        assert custody.kms is not None
        bus = make_bus()
        await bus.start()
        runtime = ServiceRuntime(spec, settings, bus, custody.kms, settings.database_url.get_secret_value()
                                 if settings.database_url else "")
        try:
            await runtime.start()
            print(f"coffer {spec.name}: unsealed ({settings.seal}) in {(custody.took or 0) * 1000:.0f} ms "
                  f"(the attempt that opened it: {(custody.attempt or 0) * 1000:.0f} ms); "
                  f"serving RPC '{rpc_name(spec.name)}.*' (Ctrl-C to stop)", flush=True)
            freeze_startup_heap()
            await stop.wait()
        finally:
            await runtime.close()
            await bus.close()
    finally:
        await custody.close()
