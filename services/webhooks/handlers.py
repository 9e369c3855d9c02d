"""RPC handlers of the webhook dispatcher: webhooks, subscriptions, deliveries (typed contracts in and out)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.webhooks import domain
from services.webhooks.repository import WebhooksStore
from services.webhooks.ssrf import check_url
from shared.context import RequestContext
from shared.contracts import from_row, handles
from shared.contracts import webhooks as contract
from shared.contracts.webhooks import (
    EVENT_PATTERN,
    Attempt,
    DeliveryDetail,
    DeliveryRef,
    DeliveryView,
    ListDeliveries,
    Page,
    PageRequest,
    Ping,
    Ref,
    SubscriptionCreate,
    SubscriptionView,
    WebhookChange,
    WebhookCreate,
    WebhookView,
    WebhookWithSecret,
)
from shared.cursors import CursorCodec
from shared.errors import ValidationError
from shared.globs import compile_glob
from shared.outbound import Lookup, OutboundPolicy


def delivery_view(row: Any) -> DeliveryView:
    return from_row(DeliveryView, row, event_id=str(row["event_id"]),
                    next_attempt_at=row["next_attempt_at"] if row["status"] == "pending" else None)


def delivery_detail(row: Any, attempts: list[Any]) -> DeliveryDetail:
    return DeliveryDetail(**delivery_view(row).model_dump(), attempts=[attempt_view(a) for a in attempts])


def attempt_view(row: Any) -> Attempt:
    """An attempt as shown: never more than ``MAX_RESPONSE_BODY`` of a body, whenever it was stored."""
    return from_row(Attempt, row, response_body=domain.shown_body(row.get("response_body")))


class WebhookHandlers:
    def __init__(self, repo: WebhooksStore, cursors: CursorCodec, policy: OutboundPolicy,
                 overlap: float, lookup: Lookup, wake: Callable[[], None]) -> None:
        self.repo = repo
        self.cursors = cursors
        self.policy = policy
        self.overlap = overlap
        self.lookup = lookup
        self.wake = wake

    async def _page(self, ctx: RequestContext, page: PageRequest, kind: str, fetch: Any,
                    view: Callable[[Any], Any], webhook_id: str = "") -> Page[Any]:
        tenant = ctx.require_tenant()
        rows, cursor = await self.cursors.page(
            tenant, {"kind": kind, "webhook_id": webhook_id, "limit": page.limit}, page.cursor, page.limit,
            lambda after, n: fetch(tenant, after, n), lambda last: last["id"])
        return Page(items=[view(r) for r in rows], next_cursor=cursor)

    @handles(contract.CREATE)
    async def create(self, body: WebhookCreate, ctx: RequestContext) -> WebhookWithSecret:
        await check_url(body.url, self.policy, self.lookup)
        secret = domain.new_secret()
        row = await self.repo.create_webhook(ctx.require_tenant(), body.url, body.description, body.enabled, secret,
                                             ctx.quota("max_webhooks"))
        return from_row(WebhookWithSecret, row, secret=secret)  # shown once

    @handles(contract.GET)
    async def get(self, ref: Ref, ctx: RequestContext) -> WebhookView:
        return from_row(WebhookView, await self.repo.webhook(ctx.require_tenant(), ref.id))

    @handles(contract.LIST)
    async def list(self, page: PageRequest, ctx: RequestContext) -> Page[WebhookView]:
        return await self._page(ctx, page, "webhooks", self.repo.list_webhooks, lambda r: from_row(WebhookView, r))

    @handles(contract.PATCH)
    async def patch(self, change: WebhookChange, ctx: RequestContext) -> WebhookView:
        if change.url is not None:
            await check_url(change.url, self.policy, self.lookup)
        return from_row(WebhookView, await self.repo.update_webhook(
            ctx.require_tenant(), change.id, change.url, change.description, change.enabled))

    @handles(contract.DELETE)
    async def delete(self, ref: Ref, ctx: RequestContext) -> None:
        await self.repo.delete_webhook(ctx.require_tenant(), ref.id)

    @handles(contract.PING)
    async def send_ping(self, ref: Ref, ctx: RequestContext) -> Ping:
        delivery_id = await self.repo.add_ping(ctx.require_tenant(), ref.id, ctx.request_id)
        self.wake()
        return Ping(delivery_id=delivery_id)

    @handles(contract.ROTATE_SECRET)
    async def rotate_secret(self, ref: Ref, ctx: RequestContext) -> WebhookWithSecret:
        secret = domain.new_secret()
        row = await self.repo.rotate_secret(ctx.require_tenant(), ref.id, secret, self.overlap)
        return from_row(WebhookWithSecret, row, secret=secret, previous_secret_valid_until=row["prev_until"])

    @handles(contract.SUBSCRIBE)
    async def sub_create(self, body: SubscriptionCreate, ctx: RequestContext) -> SubscriptionView:
        if any(not re.fullmatch(EVENT_PATTERN, t) for t in body.event_types):
            raise ValidationError.on("event_types", "event types are like secret.created, secret.*, #")
        if body.path_pattern is not None:
            compile_glob(body.path_pattern)
        row = await self.repo.create_subscription(ctx.require_tenant(), body.webhook_id, body.event_types,
                                                  body.path_pattern, ctx.identity_id)
        return from_row(SubscriptionView, row)

    @handles(contract.SUBSCRIPTION)
    async def sub_get(self, ref: Ref, ctx: RequestContext) -> SubscriptionView:
        return from_row(SubscriptionView, await self.repo.subscription(ctx.require_tenant(), ref.id))

    @handles(contract.SUBSCRIPTIONS)
    async def sub_list(self, page: PageRequest, ctx: RequestContext) -> Page[SubscriptionView]:
        return await self._page(ctx, page, "subscriptions", self.repo.list_subscriptions,
                                lambda r: from_row(SubscriptionView, r))

    @handles(contract.UNSUBSCRIBE)
    async def sub_delete(self, ref: Ref, ctx: RequestContext) -> None:
        await self.repo.delete_subscription(ctx.require_tenant(), ref.id)

    @handles(contract.DELIVERIES)
    async def deliveries(self, req: ListDeliveries, ctx: RequestContext) -> Page[DeliveryView]:
        async def fetch(tenant: str, after: str | None, limit: int) -> Any:
            return await self.repo.deliveries(tenant, req.webhook_id, after, limit)

        return await self._page(ctx, req, "deliveries", fetch, delivery_view, req.webhook_id)

    @handles(contract.DELIVERY)
    async def delivery(self, ref: DeliveryRef, ctx: RequestContext) -> DeliveryDetail:
        return delivery_detail(*await self.repo.delivery(ctx.require_tenant(), ref.webhook_id, ref.id))

    @handles(contract.RETRY)
    async def retry(self, ref: DeliveryRef, ctx: RequestContext) -> DeliveryDetail:
        await self.repo.retry(ctx.require_tenant(), ref.webhook_id, ref.id)
        self.wake()
        return delivery_detail(*await self.repo.delivery(ctx.require_tenant(), ref.webhook_id, ref.id))
