"""How a service process runs until a signal: started (once its keys are there), its banner, stopped.

``run_sealed_service`` is a process of a sealed installation in distributed mode (``COFFER_SEAL`` other than
``file``): the gateway answers sealed until unsealed (services/sealed.py); with an auto seal every other
process unseals the root keyring by itself; with ``shamir`` each asks the gateway for its own key
(shared/handover.py).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from shared.bus import Bus, create_bus
from shared.config import Settings
from shared.registry import rpc_name
from shared.runtime import Running, ServiceRuntime, ServiceSpec, freeze_startup_heap

T = TypeVar("T")


async def run_sealed_service(spec: ServiceSpec, settings: Settings) -> None:
    """A seal in distributed mode. Auto seals (awskms, pkcs11): each process unseals the root keyring by
    itself, retrying with backoff while the KMS or HSM is away. ``shamir``: the gateway gathers the shares
    and hands each other process its own share (shared/handover.py). The gateway answers sealed meanwhile
    (services/sealed.py)."""
    from shared import custody as custody_mod

    custody_mod.check(settings, distributed=True)  # CustodyRefused (a SystemExit) says why

    def make_bus() -> Bus:
        return create_bus(settings, name=f"coffer-{spec.name}")

    dsn = settings.database_url.get_secret_value() if settings.database_url else ""
    if spec.name == "gateway":  # the one process with an address: it answers sealed meanwhile
        import importlib

        sealed = importlib.import_module("services.sealed")
        custody = custody_mod.Custody(settings)
        custody_mod.install(custody)
        await sealed.run_gateway(spec, settings, custody, make_bus)
        return
    stop = stop_on_signals()
    if settings.seal == "shamir":
        from shared.handover import HandedOver

        bus = make_bus()
        await bus.start()
        root = HandedOver(bus, spec.name, settings.sealed_keyring_file)
        print(f"coffer {spec.name}: sealed (shamir): waiting for the gateway to be unsealed and hand over "
              "this service's key ...", flush=True)
        await serve(ServiceRuntime(spec, settings, bus, root, dsn), bus, stop, lambda _: (
            f"coffer {spec.name}: unsealed (shamir, key handed over by the gateway in {(root.took or 0) * 1000:.0f} "
            f"ms); serving RPC '{rpc_name(spec.name)}.*' (Ctrl-C to stop)"))
        return
    custody = custody_mod.Custody(settings)
    custody_mod.install(custody)
    custody.start()
    print(f"coffer {spec.name}: sealed ({settings.seal}): unsealing ...", flush=True)
    try:
        kms = await until_stopped(stop, custody.wait())
        if kms is None:
            return
        bus = make_bus()
        await bus.start()
        await serve(ServiceRuntime(spec, settings, bus, kms, dsn), bus, stop, lambda _: (
            f"coffer {spec.name}: unsealed ({settings.seal}) in {(custody.took or 0) * 1000:.0f} ms "
            f"(the attempt that opened it: {(custody.attempt or 0) * 1000:.0f} ms); "
            f"serving RPC '{rpc_name(spec.name)}.*' (Ctrl-C to stop)"))
    finally:
        await custody.close()


def stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def until_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """``work``'s result, or ``None`` (``work`` cancelled) if ``stop`` comes first."""
    waiting, stopping = asyncio.ensure_future(work), asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not waiting.done():
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return None
    return waiting.result()


async def serve(runtime: ServiceRuntime, bus: Bus, stop: asyncio.Event, banner: Callable[[Running], str]) -> None:
    """Start ``runtime`` (unless stopped meanwhile), say ``banner``, run until ``stop``; then close both."""
    try:
        running = await until_stopped(stop, runtime.start())
        if running is None:
            return
        print(banner(running), flush=True)
        freeze_startup_heap()
        await stop.wait()
    finally:
        await runtime.close()
        await bus.close()
