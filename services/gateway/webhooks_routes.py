"""``/v1/webhooks`` and ``/v1/subscriptions``: the gateway's side of the webhook API (api.md §8).

Bodies are validated with the shared contracts, then forwarded to the
``webhooks`` service. Policy resources: ``webhooks/<id>`` (``webhooks`` to
create and list), ``webhooks/subscriptions/<id>`` for subscriptions.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.api_models import PageQuery
from services.gateway.handlers import BUS
from services.gateway.http import GUARD, Route, context, json_response, principal, read_model
from shared.contracts import parse
from shared.contracts.webhooks import SubscriptionCreate, WebhookCreate, WebhookPatch


async def _call(request: web.Request, method: str, payload: dict[str, Any]) -> Any:
    return await request.app[BUS].call("webhooks", method, payload, context(request))


def _page(request: web.Request) -> dict[str, Any]:
    page = parse(PageQuery, dict(request.query))
    return {"limit": page.limit, "cursor": page.cursor}


async def create_webhook(request: web.Request) -> web.Response:
    """Register an endpoint; its signing secret is in this answer only."""
    body = await read_model(request, WebhookCreate)
    quotas = await request.app[GUARD].quotas(context(request).tenant_id or "")
    created = await _call(request, "create", {**body.model_dump(), "max_webhooks": quotas.get("max_webhooks")})
    return json_response(created, status=201)


async def _visible(request: web.Request, page: dict[str, Any], resource: str) -> dict[str, Any]:
    """Keep the items the caller may ``list`` (``<resource>/<id>``)."""
    page["items"] = await request.app[GUARD].listable(request, principal(request), page["items"],
                                                      lambda item: f"{resource}/{item['id']}")
    return page


async def list_webhooks(request: web.Request) -> web.Response:
    """A page of the tenant's webhooks the caller may list."""
    return json_response(await _visible(request, await _call(request, "list", _page(request)), "webhooks"))


async def get_webhook(request: web.Request) -> web.Response:
    return json_response(await _call(request, "get", {"id": request.match_info["id"]}))


async def patch_webhook(request: web.Request) -> web.Response:
    body = await read_model(request, WebhookPatch)
    return json_response(await _call(request, "patch", {**body.model_dump(exclude_none=True),
                                                        "id": request.match_info["id"]}))


async def delete_webhook(request: web.Request) -> web.Response:
    await _call(request, "delete", {"id": request.match_info["id"]})
    return web.Response(status=204)


async def webhook_action(request: web.Request) -> web.Response:
    """``:ping`` (a ``webhook.ping`` delivery) or ``:rotate-secret`` (the old secret keeps signing for a while)."""
    action = request.match_info["action"]
    if action == "ping":
        return json_response(await _call(request, "send_ping", {"id": request.match_info["id"]}), status=202)
    result = await _call(request, "rotate_secret", {"id": request.match_info["id"]})
    return json_response(result)


async def list_deliveries(request: web.Request) -> web.Response:
    return json_response(await _call(request, "deliveries", {**_page(request),
                                                             "webhook_id": request.match_info["id"]}))


async def get_delivery(request: web.Request) -> web.Response:
    return json_response(await _call(request, "delivery", {"webhook_id": request.match_info["id"],
                                                           "id": request.match_info["did"]}))


async def retry_delivery(request: web.Request) -> web.Response:
    return json_response(await _call(request, "retry", {"webhook_id": request.match_info["id"],
                                                        "id": request.match_info["did"]}), status=202)


async def create_subscription(request: web.Request) -> web.Response:
    body = await read_model(request, SubscriptionCreate)
    return json_response(await _call(request, "sub_create", body.model_dump()), status=201)


async def list_subscriptions(request: web.Request) -> web.Response:
    """A page of the tenant's subscriptions the caller may list."""
    page = await _call(request, "sub_list", _page(request))
    return json_response(await _visible(request, page, "webhooks/subscriptions"))


async def get_subscription(request: web.Request) -> web.Response:
    return json_response(await _call(request, "sub_get", {"id": request.match_info["id"]}))


async def delete_subscription(request: web.Request) -> web.Response:
    await _call(request, "sub_delete", {"id": request.match_info["id"]})
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
