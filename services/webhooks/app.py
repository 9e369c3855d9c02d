"""Composition root of the webhook dispatcher: the API over RPC, the event consumer, the delivery worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.webhooks.dispatcher import Dispatcher
from services.webhooks.handlers import WebhookHandlers
from services.webhooks.repository import WebhooksRepository, secret_aad
from services.webhooks.settings import WebhooksSettings
from shared.context import RequestContext
from shared.contracts import rpc_table
from shared.contracts.iam import Check, IamClient, MayRequest
from shared.cursors import CursorCodec
from shared.db import SealedColumns, by_tenant_id, sealed_keys
from shared.durations import parse_duration
from shared.outbound import system_lookup
from shared.runtime import Running, ServiceDeps, ServiceSpec


@asynccontextmanager
async def lifespan(deps: ServiceDeps) -> AsyncIterator[Running]:
    settings = deps.settings_of(WebhooksSettings)
    policy = deps.outbound()
    repo = WebhooksRepository(deps.pool, deps.kms, deps.schema)
    iam = IamClient(deps.bus)

    async def may_list(owners: list[str], resource: str, ctx: RequestContext) -> list[bool]:
        if not owners:
            return []
        ask = MayRequest(checks=[Check(identity_id=o, resource=resource, capability="list") for o in owners])
        return (await iam.may(ctx, ask)).allowed

    dispatcher = Dispatcher(
        repo, policy, may_list, schedule=settings.retry_schedule, timeout=settings.webhook_timeout,
        disable_after=parse_duration(settings.webhook_disable_after), poll_interval=settings.webhook_poll_interval,
        per_endpoint=settings.webhook_endpoint_concurrency, concurrency=settings.webhook_concurrency)
    await deps.bus.subscribe("webhooks", ["#"], dispatcher.on_event)
    deps.spawn(dispatcher.run(), "webhooks-dispatcher")
    cursors = CursorCodec(await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor"))
    handlers = WebhookHandlers(repo, cursors, policy, float(parse_duration(settings.webhook_secret_overlap)),
                               system_lookup, dispatcher.wake)
    yield Running(rpc=rpc_table(handlers))


SPEC = ServiceSpec(
    name="webhooks", migrations=Path(__file__).parent / "migrations", lifespan=lifespan, settings=WebhooksSettings,
    tenant_tables=("deliveries", "subscriptions", "webhooks"),  # attempts go with deliveries
    # each endpoint's signing secret, and the previous one while a rotation's overlap lasts
    sealed=(SealedColumns("webhooks", key=("id",), aad=lambda row: secret_aad(row["id"]),
                          columns=("tenant_id",), tenant=by_tenant_id),
            SealedColumns("webhooks", key=("id",), prefix="prev_", aad=lambda row: secret_aad(row["id"]),
                          columns=("tenant_id",), tenant=by_tenant_id)),
    gauges={"coffer_webhook_deliveries_failed": "SELECT count(*) FROM deliveries WHERE status = 'failed'"
                                                " AND updated_at > now() - interval '1 hour'",
            "coffer_webhook_deliveries_pending": "SELECT count(*) FROM deliveries WHERE status = 'pending'"},
)
