"""RPC handlers of the webhook dispatcher: webhooks, subscriptions, deliveries."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.webhooks import domain
from services.webhooks.repository import WebhooksRepository
from services.webhooks.ssrf import check_url
from shared.bus import RpcHandler
from shared.context import RequestContext
from shared.contracts import parse
from shared.contracts.webhooks import EVENT_PATTERN, Ref, SubscriptionCreate, WebhookCreate, WebhookPatch
from shared.cursors import CursorCodec
from shared.errors import Forbidden, ValidationError
from shared.globs import compile_glob
from shared.outbound import Lookup, OutboundPolicy


def _tenant(ctx: RequestContext) -> str:
    if not ctx.tenant_id:
        raise Forbidden("no tenant in the request context")
    return ctx.tenant_id


def webhook_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "url": row["url"], "description": row["description"], "enabled": row["enabled"],
            "disabled_reason": row["disabled_reason"], "created_at": row["created_at"].isoformat(),
            "updated_at": row["updated_at"].isoformat()}


def subscription_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "webhook_id": row["webhook_id"], "event_types": list(row["event_types"]),
            "path_pattern": row["path_pattern"], "created_at": row["created_at"].isoformat()}


def delivery_view(row: Any, attempts: list[Any] | None = None) -> dict[str, Any]:
    view = {"id": row["id"], "webhook_id": row["webhook_id"], "event_id": str(row["event_id"]),
            "event_type": row["event_type"], "status": row["status"], "attempt_count": row["attempt_count"],
            "next_attempt_at": row["next_attempt_at"].isoformat() if row["status"] == "pending" else None,
            "created_at": row["created_at"].isoformat()}
    if attempts is not None:
        view["attempts"] = [{"at": a["at"].isoformat(), "response_status": a["response_status"],
                             "error_code": a["error_code"], "duration_ms": a["duration_ms"],
                             "response_body": a["response_body"]} for a in attempts]
    return view


class WebhookHandlers:
    def __init__(self, repo: WebhooksRepository, cursors: CursorCodec, policy: OutboundPolicy,
                 overlap: float, lookup: Lookup, wake: Callable[[], None]) -> None:
        self.repo = repo
        self.cursors = cursors
        self.policy = policy
        self.overlap = overlap
        self.lookup = lookup
        self.wake = wake

    def table(self) -> dict[str, RpcHandler]:
        return {"create": self.create, "get": self.get, "list": self.list, "patch": self.patch,
                "delete": self.delete, "send_ping": self.send_ping, "rotate_secret": self.rotate_secret,
                "sub_create": self.sub_create, "sub_get": self.sub_get, "sub_list": self.sub_list,
                "sub_delete": self.sub_delete, "deliveries": self.deliveries, "delivery": self.delivery,
                "retry": self.retry}

    async def _page(self, ctx: RequestContext, ref: Ref, kind: str, fetch: Any, view: Any) -> dict[str, Any]:
        tenant = _tenant(ctx)
        rows, cursor = await self.cursors.page(
            tenant, {"kind": kind, "webhook_id": ref.webhook_id, "limit": ref.limit}, ref.cursor, ref.limit,
            lambda after, n: fetch(tenant, after, n), lambda last: last["id"])
        return {"items": [view(r) for r in rows], "next_cursor": cursor}

    async def create(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        body = parse(WebhookCreate, {k: v for k, v in payload.items() if k != "max_webhooks"})
        await check_url(body.url, self.policy, self.lookup)
        secret = domain.new_secret()
        row = await self.repo.create_webhook(_tenant(ctx), body.url, body.description, body.enabled, secret,
                                             payload.get("max_webhooks"))
        return {**webhook_view(row), "secret": secret}  # shown once

    async def get(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return webhook_view(await self.repo.webhook(_tenant(ctx), parse(Ref, payload).id))

    async def list(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return await self._page(ctx, parse(Ref, payload), "webhooks", self.repo.list_webhooks, webhook_view)

    async def patch(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        webhook_id = str(payload.pop("id", ""))
        body = parse(WebhookPatch, payload)
        if body.url is not None:
            await check_url(body.url, self.policy, self.lookup)
        return webhook_view(await self.repo.update_webhook(_tenant(ctx), webhook_id, body.url, body.description,
                                                           body.enabled))

    async def delete(self, payload: dict[str, Any], ctx: RequestContext) -> None:
        await self.repo.delete_webhook(_tenant(ctx), parse(Ref, payload).id)

    async def send_ping(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        delivery_id = await self.repo.add_ping(_tenant(ctx), parse(Ref, payload).id, ctx.request_id)
        self.wake()
        return {"delivery_id": delivery_id}

    async def rotate_secret(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        secret = domain.new_secret()
        row = await self.repo.rotate_secret(_tenant(ctx), parse(Ref, payload).id, secret, self.overlap)
        return {**webhook_view(row), "secret": secret, "previous_secret_valid_until": row["prev_until"].isoformat()}

    async def sub_create(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        body = parse(SubscriptionCreate, payload)
        bad = [t for t in body.event_types if not re.fullmatch(EVENT_PATTERN, t)]
        if bad:
            raise ValidationError("request validation failed", details={"fields": [
                {"field": "event_types", "message": "event types are like secret.created, secret.*, #"}]})
        if body.path_pattern is not None:
            compile_glob(body.path_pattern)
        row = await self.repo.create_subscription(_tenant(ctx), body.webhook_id, body.event_types, body.path_pattern,
                                                  ctx.identity_id)
        return subscription_view(row)

    async def sub_get(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return subscription_view(await self.repo.subscription(_tenant(ctx), parse(Ref, payload).id))

    async def sub_list(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        return await self._page(ctx, parse(Ref, payload), "subscriptions", self.repo.list_subscriptions,
                                subscription_view)

    async def sub_delete(self, payload: dict[str, Any], ctx: RequestContext) -> None:
        await self.repo.delete_subscription(_tenant(ctx), parse(Ref, payload).id)

    async def deliveries(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        ref = parse(Ref, payload)

        async def fetch(tenant: str, after: str | None, limit: int) -> Any:
            return await self.repo.deliveries(tenant, ref.webhook_id, after, limit)

        return await self._page(ctx, ref, "deliveries", fetch, delivery_view)

    async def delivery(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        ref = parse(Ref, payload)
        row, attempts = await self.repo.delivery(_tenant(ctx), ref.webhook_id, ref.id)
        return delivery_view(row, attempts)

    async def retry(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        ref = parse(Ref, payload)
        await self.repo.retry(_tenant(ctx), ref.webhook_id, ref.id)
        self.wake()
        row, attempts = await self.repo.delivery(_tenant(ctx), ref.webhook_id, ref.id)
        return delivery_view(row, attempts)
