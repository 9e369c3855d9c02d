"""Composing services into a running platform.

``Platform`` starts any subset of the five services on one bus, one KMS and
one database, each through the same lifecycle (``shared.runtime``): it knows
them only by name. Embedded mode runs all five in one process; the tests run
whichever they need.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from shared.bus import Bus, create_bus
from shared.config import Settings
from shared.crypto import LocalKms
from shared.outbound import platform_endpoints
from shared.registry import SERVICES
from shared.runtime import ServiceRuntime, ServiceSpec


def spec_of(service: str) -> ServiceSpec:
    """The ``ServiceSpec`` a service declares in ``services/<name>/app.py``."""
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}")
    spec: ServiceSpec = importlib.import_module(f"services.{service}.app").SPEC
    return spec


class Platform:
    """Some or all services, sharing one bus, one KMS and one database.

    ``values`` are setting values beyond the environment (the tests'), given to
    every service's own settings class; ``settings`` is what they share. ``kms``:
    the KMS a seal opened (shared/custody.py); default the clear key file.
    """

    def __init__(
        self,
        values: Mapping[str, Any],
        dsn: str,
        *,
        services: Sequence[str] = SERVICES,
        bus: Bus | None = None,
        name: str = "coffer",
        kms: LocalKms | None = None,
    ) -> None:
        self.specs = [spec_of(s) for s in services]
        self.values = dict(values)
        self.settings = Settings(**self.values)
        self.dsn = dsn
        self.bus = bus or create_bus(self.settings, name=name)
        self._own_bus = bus is None
        # the process's KMS when its seal opened one (shared/custody.py), else the clear key file as always
        self.kms = kms if kms is not None else LocalKms.load(self.settings.key_file, create=True)
        self.runtimes: dict[str, ServiceRuntime] = {}
        self.url: str | None = None
        self.app: Any = None
        #: other listeners' addresses by name (``vault``: the Vault-compatible listener, when it is on)
        self.urls: dict[str, str] = {}

    async def start(self) -> None:
        if self._own_bus:
            await self.bus.start()
        # one set for all: the gateway adds the address it listens on once it does
        platform = await platform_endpoints(self.settings.platform_targets(self.dsn))
        for spec in self.specs:
            runtime = ServiceRuntime(spec, spec.settings(**self.values), self.bus, self.kms, self.dsn,
                                     platform=platform)
            self.runtimes[spec.name] = runtime
            running = await runtime.start()
            self.url, self.app = self.url or running.url, self.app or running.app
            self.urls.update(running.urls)

    async def close(self) -> None:
        for runtime in reversed(list(self.runtimes.values())):
            await runtime.close()
        if self._own_bus:
            await self.bus.close()
