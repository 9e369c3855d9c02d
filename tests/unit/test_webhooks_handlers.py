"""The webhook dispatcher's handlers and fan-out rule, on an in-memory store: no broker, no database."""

from __future__ import annotations

import itertools
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.webhooks.dispatcher import Dispatcher
from services.webhooks.handlers import WebhookHandlers
from shared.bus import InProcessBus
from shared.context import RequestContext
from shared.contracts import rpc_table
from shared.contracts.events import Event
from shared.cursors import CursorCodec
from shared.errors import InvalidGlob, QuotaExceeded, ValidationError, WebhookNotFound, WebhookUrlInvalid
from shared.outbound import OutboundPolicy

ZONE = {"hooks.example": ["93.184.216.34"], "internal.example": ["10.0.0.7"]}
_ids = itertools.count()


async def lookup(host: str, port: int) -> list[str]:
    if host not in ZONE:
        raise socket.gaierror("no such host")
    return ZONE[host]


class FakeWebhooksStore:
    """``WebhooksStore`` in memory; rows are dicts shaped like the tables'."""

    def __init__(self) -> None:
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.deliveries: dict[str, dict[str, Any]] = {}
        self.fanned: list[tuple[str, list[str]]] = []

    def _hook(self, tenant_id: str, webhook_id: str) -> dict[str, Any]:
        row = self.webhooks.get(webhook_id)
        if row is None or row["tenant_id"] != tenant_id:
            raise WebhookNotFound(details={"webhook_id": webhook_id})
        return row

    async def create_webhook(self, tenant_id: str, url: str, description: str | None, enabled: bool,
                             secret: str, max_webhooks: int | None) -> Any:
        mine = sum(w["tenant_id"] == tenant_id for w in self.webhooks.values())
        if max_webhooks is not None and mine >= max_webhooks:
            raise QuotaExceeded("the tenant's max_webhooks quota is reached")
        now = datetime.now(UTC)
        row = {"id": f"whk_{next(_ids)}", "tenant_id": tenant_id, "url": url, "description": description,
               "enabled": enabled, "disabled_reason": None, "created_at": now, "updated_at": now, "prev_until": None}
        self.webhooks[row["id"]] = row
        return row

    async def webhook(self, tenant_id: str, webhook_id: str) -> Any:
        return self._hook(tenant_id, webhook_id)

    async def list_webhooks(self, tenant_id: str, after: str | None, limit: int) -> list[Any]:
        rows = sorted((w for w in self.webhooks.values() if w["tenant_id"] == tenant_id), key=lambda w: w["id"])
        return [w for w in rows if after is None or w["id"] > after][:limit]

    async def update_webhook(self, tenant_id: str, webhook_id: str, url: str | None, description: str | None,
                             enabled: bool | None) -> Any:
        row = self._hook(tenant_id, webhook_id)
        row.update({k: v for k, v in {"url": url, "description": description, "enabled": enabled}.items()
                    if v is not None})
        return row

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> None:
        self.webhooks.pop(self._hook(tenant_id, webhook_id)["id"])

    async def rotate_secret(self, tenant_id: str, webhook_id: str, secret: str, overlap: float) -> Any:
        return {**self._hook(tenant_id, webhook_id), "prev_until": datetime.now(UTC)}

    async def add_ping(self, tenant_id: str, webhook_id: str, request_id: str) -> str:
        self._hook(tenant_id, webhook_id)
        return f"msg_{next(_ids)}"

    async def create_subscription(self, tenant_id: str, webhook_id: str, event_types: list[str],
                                  path_pattern: str | None, created_by: str | None) -> Any:
        self._hook(tenant_id, webhook_id)
        row = {"id": f"sub_{next(_ids)}", "tenant_id": tenant_id, "webhook_id": webhook_id, "event_types": event_types,
               "path_pattern": path_pattern, "created_by": created_by, "created_at": datetime.now(UTC)}
        self.subscriptions[row["id"]] = row
        return row

    async def subscription(self, tenant_id: str, subscription_id: str) -> Any:
        return self.subscriptions[subscription_id]

    async def list_subscriptions(self, tenant_id: str, after: str | None, limit: int) -> list[Any]:
        return [s for s in self.subscriptions.values() if s["tenant_id"] == tenant_id][:limit]

    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> None:
        self.subscriptions.pop(subscription_id)

    async def deliveries(self, tenant_id: str, webhook_id: str, after: str | None, limit: int) -> list[Any]:
        return [d for d in self.deliveries.values() if d["webhook_id"] == webhook_id][:limit]

    async def delivery(self, tenant_id: str, webhook_id: str, delivery_id: str) -> tuple[Any, list[Any]]:
        return self.deliveries[delivery_id], [{"at": datetime.now(UTC), "response_status": 500,
                                               "error_code": "webhook_delivery_failed", "duration_ms": 12,
                                               "response_body": "nope"}]

    async def retry(self, tenant_id: str, webhook_id: str, delivery_id: str) -> None:
        self.deliveries[delivery_id]["status"] = "pending"

    # -- what the dispatcher's fan-out asks of it
    async def subscriptions_of(self, tenant_ids: list[str]) -> list[list[Any]]:
        return [[s for s in self.subscriptions.values() if s["tenant_id"] == t] for t in tenant_ids]

    async def record_attempts(self, attempts: list[Any]) -> list[None]:
        return [None for _ in attempts]

    async def fan_out_many(self, items: list[tuple[Event, list[str]]]) -> list[int]:
        for event, subscription_ids in items:
            if subscription_ids:
                self.fanned.append((event.type, subscription_ids))
        return [len(ids) for _, ids in items]


@pytest.fixture
def store() -> FakeWebhooksStore:
    return FakeWebhooksStore()


class Rpc:
    """The handlers on the in-process bus: ``rpc["create"](payload, ctx)`` goes through the wire."""

    def __init__(self, bus: InProcessBus) -> None:
        self.bus = bus

    def __getitem__(self, method: str) -> Any:
        return lambda payload, context: self.bus.call("webhooks", method, payload, context)


@pytest.fixture
async def rpc(store: FakeWebhooksStore) -> AsyncIterator[Rpc]:
    bus = InProcessBus()
    await bus.start()
    await bus.serve("webhooks", rpc_table(WebhookHandlers(store, CursorCodec(secrets.token_bytes(32)),
                                                          OutboundPolicy(), 60.0, lookup, lambda: None)))
    yield Rpc(bus)
    await bus.close()


def ctx(tenant: str = "ten_a", identity: str = "idn_owner", **quotas: int) -> RequestContext:
    return RequestContext(tenant_id=tenant, identity_id=identity, quotas=quotas)


async def test_a_webhook_shows_its_secret_once_and_its_url_is_guarded(rpc: Rpc) -> None:
    created = await rpc["create"]({"url": "https://hooks.example/in"}, ctx())
    assert created["secret"].startswith("whsec_") and created["created_at"].endswith("Z")
    got = await rpc["get"]({"id": created["id"]}, ctx())
    assert "secret" not in got and got["url"] == "https://hooks.example/in"
    for url in ("https://internal.example/", "http://hooks.example/", "https://hooks.example:22/"):
        with pytest.raises(WebhookUrlInvalid):
            await rpc["create"]({"url": url}, ctx())
        with pytest.raises(WebhookUrlInvalid):
            await rpc["patch"]({"id": created["id"], "url": url}, ctx())
    with pytest.raises(WebhookNotFound):  # another tenant's id is not found, not forbidden
        await rpc["get"]({"id": created["id"]}, ctx("ten_b"))


async def test_the_webhook_quota_comes_from_the_context(rpc: Rpc) -> None:
    await rpc["create"]({"url": "https://hooks.example/1"}, ctx(max_webhooks=1))
    with pytest.raises(QuotaExceeded):
        await rpc["create"]({"url": "https://hooks.example/2"}, ctx(max_webhooks=1))


async def test_subscriptions_check_types_and_globs_and_remember_their_owner(
        rpc: Rpc, store: FakeWebhooksStore) -> None:
    hook = await rpc["create"]({"url": "https://hooks.example/in"}, ctx())
    for bad in (["Secret.Created"], ["secret..x"], [""]):
        with pytest.raises(ValidationError):
            await rpc["sub_create"]({"webhook_id": hook["id"], "event_types": bad}, ctx())
    with pytest.raises(InvalidGlob):
        await rpc["sub_create"]({"webhook_id": hook["id"], "event_types": ["#"], "path_pattern": "a**"}, ctx())
    sub = await rpc["sub_create"]({"webhook_id": hook["id"], "event_types": ["secret.*"], "path_pattern": "app/**"},
                                  ctx(identity="idn_owner"))
    assert store.subscriptions[sub["id"]]["created_by"] == "idn_owner"


async def test_deliveries_show_their_attempts(rpc: Rpc, store: FakeWebhooksStore) -> None:
    hook = await rpc["create"]({"url": "https://hooks.example/in"}, ctx())
    now = datetime.now(UTC)
    store.deliveries["msg_1"] = {"id": "msg_1", "webhook_id": hook["id"], "event_id": "e1",
                                 "event_type": "secret.created", "status": "failed", "attempt_count": 8,
                                 "next_attempt_at": now, "created_at": now}
    detail = await rpc["delivery"]({"webhook_id": hook["id"], "id": "msg_1"}, ctx())
    assert detail["next_attempt_at"] is None and detail["attempts"][0]["error_code"] == "webhook_delivery_failed"
    retried = await rpc["retry"]({"webhook_id": hook["id"], "id": "msg_1"}, ctx())
    assert retried["status"] == "pending" and retried["next_attempt_at"] is not None


async def test_an_event_is_fanned_out_only_to_owners_who_may_list_its_resource(store: FakeWebhooksStore) -> None:
    for owner in ("idn_allowed", "idn_denied", None):  # None: a subscription from before owners were kept
        store.subscriptions[f"sub_{owner}"] = {"id": f"sub_{owner}", "tenant_id": "ten_a", "created_by": owner,
                                               "event_types": ["secret.*"], "path_pattern": "app/**"}
    asked: list[tuple[list[str], str]] = []

    async def may_list(owners: list[str], resource: str, context: RequestContext) -> list[bool]:
        asked.append((owners, resource))
        return [o == "idn_allowed" for o in owners]

    dispatcher = Dispatcher(store, OutboundPolicy(), may_list, schedule=(0.0,), timeout=1.0, disable_after=60.0,
                            poll_interval=1.0, per_endpoint=1, concurrency=1, lookup=lookup)
    await dispatcher.on_event(Event(type="secret.updated", tenant_id="ten_a", data={"path": "app/db"}), ctx())
    assert asked == [(["idn_allowed", "idn_denied"], "secrets/app/db")]  # one question per event
    assert store.fanned == [("secret.updated", ["sub_idn_allowed"])]
