"""Keeping this replica's in-memory state current: events from the other replicas, and a periodic reload.

Revocations, cached policy rules and maintenance mode are changed at once on
the replica that changes them; every other replica learns it from the event
(``token.revoked``, ``policy.*``, ``system.maintenance``) on a queue of its own,
within a second, and reloads everything every ``refresh`` seconds in case it
missed an event while disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.gateway.edge.gates import Gates
from services.gateway.iam.authorizer import RuleCache
from services.gateway.iam.repository import IamRepository
from services.gateway.iam.revocations import Revocations
from shared.bus import Bus
from shared.context import RequestContext
from shared.contracts.events import Event

log = structlog.get_logger("coffer.gateway.replica")
CONSUMER = "gateway-authz"


class ReplicaSync:
    def __init__(self, revocations: Revocations, rules: RuleCache, gates: Gates, identities: IamRepository,
                 refresh: float = 30.0) -> None:
        self.revocations = revocations
        self.rules = rules
        self.gates = gates
        self.identities = identities
        self.refresh = refresh
        self._task: asyncio.Task[None] | None = None

    async def start(self, bus: Bus) -> None:
        await self.reload()
        await bus.subscribe(CONSUMER, ["policy.*", "token.revoked", "system.maintenance"], self.on_event,
                            broadcast=True)
        self._task = asyncio.create_task(self._refresher(), name="gateway-replica-refresh")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self) -> None:
        await self.revocations.reload()
        self.rules.forget()
        await self.gates.reload()
        await self.identities.forget_old_login_failures()

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(self.refresh)
            try:
                await self.reload()
            except Exception as exc:  # noqa: BLE001 - keep what we have, try again later
                log.warning("replica_reload_failed", error=type(exc).__name__)

    async def on_event(self, event: Event, ctx: RequestContext) -> None:
        if event.type == "token.revoked":
            self.revocations.on_event(event)
            if identity := event.data.get("identity_id"):
                self.rules.forget(str(identity))
        elif event.type == "system.maintenance":
            self.gates.on_event(event)
        else:  # policy.created / updated / deleted, bindings included
            self.rules.forget()
