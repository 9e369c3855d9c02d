"""``/v1/webhooks`` and ``/v1/subscriptions``: the gateway's side of the webhook API (api.md §8).

Bodies are validated with the shared contracts, then forwarded to the
``webhooks`` service. Policy resources: ``webhooks/<id>`` (``webhooks`` to
create and list), ``webhooks/subscriptions/<id>`` for subscriptions.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.edge.routes import PageQuery, Route, context, model_response, principal, query, read_model
from services.gateway.state import state
from shared.contracts.webhooks import (
    DeliveryRef,
    ListDeliveries,
    Page,
    PageRequest,
    Ref,
    SubscriptionCreate,
    WebhookChange,
    WebhookCreate,
    WebhookPatch,
    WebhooksClient,
)


def _hooks(request: web.Request) -> WebhooksClient:
    return state(request).webhooks


def _page(request: web.Request) -> PageRequest:
    params = query(request, PageQuery)
    return PageRequest(limit=params.limit, cursor=params.cursor)


def _id(request: web.Request, key: str = "id") -> Ref:
    return Ref(id=request.match_info[key][:64])


async def create_webhook(request: web.Request) -> web.Response:
    """Register an endpoint; its signing secret is in this answer only."""
    body = await read_model(request, WebhookCreate)
    return model_response(await _hooks(request).create(context(request), body), status=201)


async def _visible(request: web.Request, page: Page[Any], resource: str) -> Page[Any]:
    """Keep the items the caller may ``list`` (``<resource>/<id>``)."""
    items = await state(request).authorizer.listable(request, principal(request), page.items,
                                                     lambda item: f"{resource}/{item.id}")
    return page.model_copy(update={"items": items})


async def list_webhooks(request: web.Request) -> web.Response:
    """A page of the tenant's webhooks the caller may list."""
    page = await _hooks(request).list(context(request), _page(request))
    return model_response(await _visible(request, page, "webhooks"))


async def get_webhook(request: web.Request) -> web.Response:
    return model_response(await _hooks(request).get(context(request), _id(request)))


async def patch_webhook(request: web.Request) -> web.Response:
    body = await read_model(request, WebhookPatch)
    change = WebhookChange(**body.model_dump(), id=request.match_info["id"][:64])
    return model_response(await _hooks(request).patch(context(request), change))


async def delete_webhook(request: web.Request) -> web.Response:
    await _hooks(request).delete(context(request), _id(request))
    return web.Response(status=204)


async def webhook_action(request: web.Request) -> web.Response:
    """``:ping`` (a ``webhook.ping`` delivery) or ``:rotate-secret`` (the old secret keeps signing for a while)."""
    if request.match_info["action"] == "ping":
        return model_response(await _hooks(request).ping(context(request), _id(request)), status=202)
    return model_response(await _hooks(request).rotate_secret(context(request), _id(request)))


async def list_deliveries(request: web.Request) -> web.Response:
    page = _page(request)
    return model_response(await _hooks(request).deliveries(context(request), ListDeliveries(
        webhook_id=request.match_info["id"][:64], limit=page.limit, cursor=page.cursor)))


def _delivery(request: web.Request) -> DeliveryRef:
    return DeliveryRef(webhook_id=request.match_info["id"][:64], id=request.match_info["did"][:64])


async def get_delivery(request: web.Request) -> web.Response:
    return model_response(await _hooks(request).delivery(context(request), _delivery(request)))


async def retry_delivery(request: web.Request) -> web.Response:
    return model_response(await _hooks(request).retry(context(request), _delivery(request)), status=202)


async def create_subscription(request: web.Request) -> web.Response:
    body = await read_model(request, SubscriptionCreate)
    return model_response(await _hooks(request).subscribe(context(request), body), status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    """A page of the tenant's subscriptions the caller may list."""
    page = await _hooks(request).subscriptions(context(request), _page(request))
    return model_response(await _visible(request, page, "webhooks/subscriptions"))


async def get_subscription(request: web.Request) -> web.Response:
    return model_response(await _hooks(request).subscription(context(request), _id(request)))


async def delete_subscription(request: web.Request) -> web.Response:
    await _hooks(request).unsubscribe(context(request), _id(request))
    return web.Response(status=204)


def _on(kind: str, capability: str, key: str | None = "id") -> Any:
    return lambda request: (f"{kind}/{request.match_info[key]}" if key else kind, capability)


_W = {"scope": "webhooks"}
NF = ("webhook_not_found",)

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/webhooks", create_webhook, **_W, target=_on("webhooks", "write", None), body=WebhookCreate,
          statuses=(201,), errors=("webhook_url_invalid",)),
    Route("GET", "/v1/webhooks", list_webhooks, **_W, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/webhooks/{id}", get_webhook, **_W, target=_on("webhooks", "read"), errors=NF),
    Route("PATCH", "/v1/webhooks/{id}", patch_webhook, **_W, target=_on("webhooks", "write"), body=WebhookPatch,
          errors=(*NF, "webhook_url_invalid")),
    Route("DELETE", "/v1/webhooks/{id}", delete_webhook, **_W, target=_on("webhooks", "delete"), statuses=(204,),
          errors=NF),
    Route("POST", "/v1/webhooks/{id}:{action:(ping|rotate-secret)}", webhook_action, **_W,
          target=lambda r: (f"webhooks/{r.match_info['id']}",
                            "rotate" if r.match_info["action"] == "rotate-secret" else "write"),
          statuses=(200, 202), errors=NF, doc_paths=("/v1/webhooks/{id}:ping", "/v1/webhooks/{id}:rotate-secret")),
    Route("GET", "/v1/webhooks/{id}/deliveries", list_deliveries, **_W, target=_on("webhooks", "read"),
          query=PageQuery, errors=(*NF, "invalid_cursor")),
    Route("GET", "/v1/webhooks/{id}/deliveries/{did}", get_delivery, **_W, target=_on("webhooks", "read"),
          errors=NF),
    Route("POST", "/v1/webhooks/{id}/deliveries/{did}:retry", retry_delivery, **_W, target=_on("webhooks", "write"),
          statuses=(202,), errors=NF),
    Route("POST", "/v1/subscriptions", create_subscription, **_W, target=_on("webhooks/subscriptions", "write", None),
          body=SubscriptionCreate, statuses=(201,), errors=(*NF, "invalid_glob")),
    Route("GET", "/v1/subscriptions", list_subscriptions, **_W, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/subscriptions/{id}", get_subscription, **_W, target=_on("webhooks/subscriptions", "read"),
          errors=("subscription_not_found",)),
    Route("DELETE", "/v1/subscriptions/{id}", delete_subscription, **_W,
          target=_on("webhooks/subscriptions", "delete"), statuses=(204,), errors=("subscription_not_found",)),
)
