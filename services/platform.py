"""Composing services into a running platform.

``Platform`` starts any subset of the five services on one bus and one
database, and the gateway's HTTP server when the gateway is among them.
Embedded mode runs all five in one process; ``python -m services.gateway``
runs the gateway alone; the tests run whichever they need.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from aiohttp import web

from services.gateway.app import SPEC as GATEWAY
from services.gateway.app import create_app
from services.gateway.http import LIMITER
from services.gateway.server import GatewayRunner
from services.lease.app import SPEC as LEASE
from services.pki.app import SPEC as PKI
from services.secrets.app import SPEC as SECRETS
from services.webhooks.app import SPEC as WEBHOOKS
from shared.bus import Bus, create_bus
from shared.config import Settings
from shared.crypto import LocalKms
from shared.registry import SERVICES
from shared.runtime import ServiceRuntime, ServiceSpec

SPECS: dict[str, ServiceSpec] = {s.name: s for s in (GATEWAY, SECRETS, PKI, LEASE, WEBHOOKS)}


class Platform:
    """Some or all services, sharing one bus, one KMS and one database."""

    def __init__(
        self,
        settings: Settings,
        dsn: str,
        *,
        services: Sequence[str] = SERVICES,
        bus: Bus | None = None,
        name: str = "coffer",
    ) -> None:
        unknown = set(services) - set(SPECS)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}")
        self.settings = settings
        self.dsn = dsn
        self.services = tuple(services)
        self.bus = bus or create_bus(settings, name=name)
        self._own_bus = bus is None
        self.kms = LocalKms.load(settings.key_file, create=True)
        self.runtimes: dict[str, ServiceRuntime] = {}
        self._runner: GatewayRunner | None = None
        self.url: str | None = None
        self.app: web.Application | None = None

    async def start(self) -> None:
        if self._own_bus:
            await self.bus.start()
        for name in self.services:
            runtime = ServiceRuntime(SPECS[name], self.settings, self.bus, self.kms, self.dsn)
            self.runtimes[name] = runtime
            deps = await runtime.start()
            if name == "gateway":
                self.app = await create_app(deps)
        if self.app is not None:
            limiter = self.app[LIMITER]
            self._runner = GatewayRunner(self.app, access_log=None, handle_signals=False,
                                         headers_for=lambda remote: limiter.peek("read", f"ip:{remote}").headers())
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.settings.http_host, self.settings.http_port)
            await site.start()
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
        for runtime in reversed(list(self.runtimes.values())):
            await runtime.close()
        if self._own_bus:
            await self.bus.close()
