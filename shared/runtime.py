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
import zlib
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import structlog

from shared import byok, handover, keyring
from shared.bus import Bus, RpcHandler, create_bus
from shared.config import Settings
from shared.context import RequestContext
from shared.contracts import Empty
from shared.contracts.events import Event
from shared.contracts.system import PingResult, RewrapResult, ShredRequest, ShredResult, TenantKmsRequest
from shared.crypto import LocalKms
from shared.db import (
    OutboxRelay,
    SealedColumns,
    create_pool,
    has_legacy,
    inbox,
    legacy_count,
    migrate,
    rewrap_all,
    sealed_keys,
)
from shared.errors import ServiceUnavailable
from shared.logging import configure
from shared.outbound import OutboundPolicy, PlatformEndpoints, platform_endpoints
from shared.registry import rpc_name

_KEK_ROTATION_LOCK = 0x6B656B0000  # + a number of the schema: one rotation at a time per service
log = structlog.get_logger("coffer.runtime")
S = TypeVar("S", bound=Settings)


@dataclass
class ServiceDeps:
    """What a service is built from (passed down, never global)."""

    name: str
    settings: Settings
    bus: Bus
    pool: asyncpg.Pool
    #: the service's keyring (shared/keyring.py): its own values; ``kms.tenant(id)`` for a tenant's
    kms: keyring.ServiceKeyring
    schema: str
    relay: OutboxRelay
    #: the platform's own endpoints (database, broker, gateway): no outbound call may reach them
    platform: PlatformEndpoints = field(default_factory=PlatformEndpoints)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    #: the root keyring, when this process holds it (the gateway hands shares over from it: shared/handover.py)
    root: LocalKms | None = None

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
    #: its other listeners' addresses, by name (the gateway's ``vault``, when it has one)
    urls: Mapping[str, str] = field(default_factory=dict)


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
    #: gauges for /metrics read at each ping: a name of ``shared.metrics.SERVICE_GAUGES`` -> a query of one
    #: number over the service's schema (counts over every tenant; each must be cheap: an index answers it)
    gauges: Mapping[str, str] = field(default_factory=dict)


class ServiceRuntime:
    """One running service."""

    def __init__(self, spec: ServiceSpec, settings: Settings, bus: Bus, kms: LocalKms | handover.RootKeys, dsn: str, *,
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
        self.keyring: keyring.ServiceKeyring | None = None
        self.tenant_kms: byok.TenantKms | None = None
        self.deps: ServiceDeps | None = None
        self.running: Running | None = None
        self._stack = AsyncExitStack()

    async def start(self) -> Running:
        if self.platform is None:
            self.platform = await platform_endpoints(self.settings.platform_targets(self.dsn))
        self.pool = await create_pool(self.dsn, self.schema)
        async with self.pool.acquire() as conn:
            await migrate(conn, self.schema, self.spec.migrations)
            salt = await handover.ensure_salt(conn)
        root = handover.LocalRoot(self.kms) if isinstance(self.kms, LocalKms) else self.kms
        self.keyring = keyring.ServiceKeyring.open(self.settings.keyrings(root.path), self.spec.name,
                                                   await root.share(self.spec.name), salt)
        log.info("service_keyring_opened", service=self.spec.name, file=self.keyring.path.name)
        self.tenant_kms = byok.TenantKms(self.settings.awskms_region, self.settings.awskms_endpoint_url,
                                         self.settings.awskms_key_id if self.settings.seal == "awskms" else None)
        with contextlib.suppress(TimeoutError):  # BYOK tenants' keys asked once before serving (then every 20 s)
            await asyncio.wait_for(byok.refresh(self.keyring, self.tenant_kms, self.settings.byok_ttl), 15)
        places = (*self.spec.sealed, sealed_keys.sealed_columns(self.schema))
        if await has_legacy(self.pool, places):  # sealed before the hierarchy: moved under it, once
            self.keyring.legacy = await root.legacy()
            moved, unreadable = await rewrap_all(self.pool, self.keyring, places, only_legacy=True)
            log.warning("sealed_values_moved_to_keyring", service=self.spec.name, moved=moved, unreadable=unreadable)
        self.relay = OutboxRelay(
            self.pool, self.bus, self.schema, poll_interval=self.settings.outbox_poll_interval
        )
        self.deps = ServiceDeps(
            name=self.spec.name, settings=self.settings, bus=self.bus, pool=self.pool,
            kms=self.keyring, schema=self.schema, relay=self.relay, platform=self.platform,
            root=self.kms if isinstance(self.kms, LocalKms) else None,
        )
        self.deps.spawn(byok.watch(self.keyring, self.tenant_kms, self.settings.byok_check_interval,
                                   self.settings.byok_ttl), f"{self.spec.name}-byok")
        running = Running()
        if self.spec.lifespan is not None:
            running = await self._stack.enter_async_context(self.spec.lifespan(self.deps))
        own: dict[str, RpcHandler] = {"rewrap": self._rewrap, "ping": self._ping, "shred": self._shred,
                                      "tenant_kms": self._tenant_kms}
        if set(own) & set(running.rpc):  # health, KEK rotation, tenants' keys: the runtime's, for all alike
            raise RuntimeError(f"{self.spec.name}: {sorted(own)} are the runtime's methods")
        handlers: dict[str, RpcHandler] = {**running.rpc, **own}
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
            gauges = {}
            if self.spec.gauges and payload.get("gauges") is True:
                assert self.pool is not None
                async with self.pool.acquire() as conn:
                    gauges = {name: float(await conn.fetchval(sql) or 0) for name, sql in self.spec.gauges.items()}
        except Exception:  # noqa: BLE001 - the caller only needs to know it is not ok
            raise ServiceUnavailable(f"{self.spec.name} storage is unavailable") from None
        return PingResult(service=self.spec.name, outbox_backlog=backlog, gauges=gauges).model_dump()

    async def _tenant_deleted(self, event: Event, ctx: RequestContext) -> None:
        """Destroy the deleted tenant's data in this service's schema, once (inbox)."""
        assert self.pool is not None
        tenant_id = event.data.get("tenant_id") or event.tenant_id
        if event.type != "tenant.deleted" or not isinstance(tenant_id, str) or not tenant_id:
            return
        assert self.keyring is not None
        self.keyring.shred(tenant_id)  # the gateway shredded before deleting; again, before any row goes
        async with self.pool.acquire() as conn, conn.transaction():
            if not await inbox.claim(conn, f"{self.spec.name}-tenants", event.id):
                return
            removed = 0
            for table in self.spec.tenant_tables:
                status = await conn.execute(f'DELETE FROM "{table}" WHERE tenant_id = $1', tenant_id)
                removed += int(status.split()[-1])
        log.info("tenant_data_destroyed", service=self.spec.name, tenant_id=tenant_id, rows=removed)

    async def _shred(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """Destroy a tenant's KEKs in this service's keyring (the gateway, deleting the tenant)."""
        assert self.keyring is not None
        request = ShredRequest.model_validate(payload)
        destroyed = self.keyring.shred(request.tenant_id)
        log.warning("tenant_keys_destroyed", service=self.spec.name, tenant_id=request.tenant_id, had_keys=destroyed)
        return ShredResult(service=self.spec.name, destroyed=destroyed).model_dump()

    async def _tenant_kms(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """The tenant's KEKs wrapped by its own KMS key too, or no longer (the gateway, setting ``kms_key``)."""
        assert self.keyring is not None and self.tenant_kms is not None
        request = TenantKmsRequest.model_validate(payload)
        key = request.kms_key.model_dump() if request.kms_key is not None else None
        await byok.set_key(self.keyring, request.tenant_id, key, self.tenant_kms, self.settings.byok_ttl)
        return Empty().model_dump()

    async def _rewrap(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        """``sys/kms:rotate`` here: new KEKs in this service's keyring (its own, one per tenant), then every
        data key re-wrapped under them (values untouched). One rotation at a time across its replicas."""
        assert self.pool is not None and self.keyring is not None
        async with self.pool.acquire() as conn:
            lock = _KEK_ROTATION_LOCK + zlib.crc32(self.schema.encode()) % 0x10000
            await conn.execute("SELECT pg_advisory_lock($1)", lock)
            try:
                kek_id = self.keyring.rotate()
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", lock)
        places = (*self.spec.sealed, sealed_keys.sealed_columns(self.schema))
        moved, unreadable = await rewrap_all(self.pool, self.keyring, places)
        return RewrapResult(kek_id=kek_id, rewrapped=moved, unreadable=unreadable,
                            legacy_left=await legacy_count(self.pool, places)).model_dump()

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
    from shared import serve

    settings = require_distributed(spec.settings())
    configure(settings.log_level, settings.log_format)
    assert settings.database_url is not None
    if settings.seal != "file":
        await serve.run_sealed_service(spec, settings)
        return
    bus = create_bus(settings, name=f"coffer-{spec.name}")
    kms = LocalKms.load(settings.key_file, create=True)
    await bus.start()
    runtime = ServiceRuntime(spec, settings, bus, kms, settings.database_url.get_secret_value())
    await serve.serve(runtime, bus, serve.stop_on_signals(), lambda running: (
        f"coffer {spec.name}: " + (f"listening on {running.url}" if running.url else
                                    f"serving RPC '{rpc_name(spec.name)}.*'") + " (Ctrl-C to stop)"))
