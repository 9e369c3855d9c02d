"""``/v1/pki/acme``: the ACME client (api.md §6) — accounts, RFC 2136 DNS providers, orders.

Scope ``pki``; feature flag ``acme``. Policy resources:

- ``pki/acme/accounts/<id>`` and ``pki/acme/dns-providers/<id>``: ``manage`` to create (on the bare
  ``pki/acme/accounts`` / ``pki/acme/dns-providers``) or delete, ``read`` / ``list`` to see;
- ``pki/acme/orders/<id>``: ``issue`` to order (on ``pki/acme/orders``), ``read`` / ``list`` to see,
  ``manage`` to delete. An order acts through an account and a provider: the caller needs ``issue``
  on both too, or anyone who may order could spend another team's account and DNS zone;
- ``pki/acme/orders/<id>/private-key``: ``read`` — the certificate's key, a grant of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.gateway.edge.routes import PageQuery, Route, context, model_response, query, read_model
from services.gateway.forward.access import also, authorize, listed
from services.gateway.state import state
from shared.contracts import PageRequest
from shared.contracts.acme import (
    ACCOUNT_ID,
    ORDER_ID,
    PROVIDER_ID,
    AccountCreate,
    AcmeClient,
    OrderCreate,
    OrderList,
    OrderStatus,
    ProviderCreate,
    Ref,
)

ACCOUNTS, PROVIDERS, ORDERS = "pki/acme/accounts", "pki/acme/dns-providers", "pki/acme/orders"


class OrderQuery(PageQuery):
    status: OrderStatus | None = None


def _acme(request: web.Request) -> AcmeClient:
    return state(request).acme


def _id(request: web.Request) -> Ref:
    return Ref(id=request.match_info["id"][:64])


def _page(request: web.Request) -> PageRequest:
    params = query(request, PageQuery)
    return PageRequest(limit=params.limit, cursor=params.cursor)


async def create_account(request: web.Request) -> web.Response:
    body = await read_model(request, AccountCreate)
    return model_response(await _acme(request).create_account(context(request), body), status=201)


async def list_accounts(request: web.Request) -> web.Response:
    page = await _acme(request).list_accounts(context(request), _page(request))
    return await listed(request, page, lambda a: f"{ACCOUNTS}/{a.id}")


async def get_account(request: web.Request) -> web.Response:
    return model_response(await _acme(request).get_account(context(request), _id(request)))


async def delete_account(request: web.Request) -> web.Response:
    await _acme(request).delete_account(context(request), _id(request))
    return web.Response(status=204)


async def create_provider(request: web.Request) -> web.Response:
    body = await read_model(request, ProviderCreate)
    return model_response(await _acme(request).create_provider(context(request), body), status=201)


async def list_providers(request: web.Request) -> web.Response:
    page = await _acme(request).list_providers(context(request), _page(request))
    return await listed(request, page, lambda p: f"{PROVIDERS}/{p.id}")


async def get_provider(request: web.Request) -> web.Response:
    return model_response(await _acme(request).get_provider(context(request), _id(request)))


async def delete_provider(request: web.Request) -> web.Response:
    await _acme(request).delete_provider(context(request), _id(request))
    return web.Response(status=204)


async def create_order(request: web.Request) -> web.Response:
    body = await read_model(request, OrderCreate)
    await authorize(request, ORDERS, "issue")
    await also(request, f"{ACCOUNTS}/{body.account_id}", "issue")
    await also(request, f"{PROVIDERS}/{body.dns_provider_id}", "issue")
    return model_response(await _acme(request).create_order(context(request), body), status=202)


async def list_orders(request: web.Request) -> web.Response:
    params = query(request, OrderQuery)
    page = await _acme(request).list_orders(context(request), OrderList(limit=params.limit, cursor=params.cursor,
                                                                         status=params.status))
    return await listed(request, page, lambda o: f"{ORDERS}/{o.id}")


async def get_order(request: web.Request) -> web.Response:
    return model_response(await _acme(request).get_order(context(request), _id(request)))


async def order_key(request: web.Request) -> web.Response:
    response = model_response(await _acme(request).order_key(context(request), _id(request)))
    response.headers["Cache-Control"] = "no-store"
    return response


async def delete_order(request: web.Request) -> web.Response:
    await _acme(request).delete_order(context(request), _id(request))
    return web.Response(status=204)


def _on(kind: str, capability: str, tail: str = "") -> Callable[[web.Request], tuple[str, str]]:
    return lambda request: (f"{kind}/{request.match_info['id'][:64]}{tail}", capability)


def _p(pattern: str) -> dict[str, Any]:
    return {"scope": "pki", "params": {"id": {"type": "string", "pattern": pattern}}}


_S: dict[str, Any] = {"scope": "pki"}
UPSTREAM = ("backend_error", "backend_timeout", "backend_rate_limited")
A_NF, D_NF, O_NF = ("acme_account_not_found",), ("dns_provider_not_found",), ("acme_order_not_found",)

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/pki/acme/accounts", create_account, **_S, target=lambda _: (ACCOUNTS, "manage"),
          body=AccountCreate, statuses=(201,), errors=("invalid_config", *UPSTREAM)),
    Route("GET", "/v1/pki/acme/accounts", list_accounts, **_S, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/pki/acme/accounts/{id}", get_account, **_p(ACCOUNT_ID), target=_on(ACCOUNTS, "read"),
          errors=A_NF),
    Route("DELETE", "/v1/pki/acme/accounts/{id}", delete_account, **_p(ACCOUNT_ID), target=_on(ACCOUNTS, "manage"),
          statuses=(204,), errors=(*A_NF, "invalid_request")),
    Route("POST", "/v1/pki/acme/dns-providers", create_provider, **_S, target=lambda _: (PROVIDERS, "manage"),
          body=ProviderCreate, statuses=(201,), errors=("invalid_config", "name_conflict")),
    Route("GET", "/v1/pki/acme/dns-providers", list_providers, **_S, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/pki/acme/dns-providers/{id}", get_provider, **_p(PROVIDER_ID), target=_on(PROVIDERS, "read"),
          errors=D_NF),
    Route("DELETE", "/v1/pki/acme/dns-providers/{id}", delete_provider, **_p(PROVIDER_ID),
          target=_on(PROVIDERS, "manage"), statuses=(204,), errors=(*D_NF, "invalid_request")),
    Route("POST", "/v1/pki/acme/orders", create_order, **_S, body=OrderCreate, statuses=(202,),
          errors=(*A_NF, *D_NF, "acme_order_failed", *UPSTREAM)),
    Route("GET", "/v1/pki/acme/orders", list_orders, **_S, query=OrderQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/pki/acme/orders/{id}", get_order, **_p(ORDER_ID), target=_on(ORDERS, "read"), errors=O_NF),
    Route("GET", "/v1/pki/acme/orders/{id}/private-key", order_key, **_p(ORDER_ID),
          target=_on(ORDERS, "read", "/private-key"), errors=(*O_NF, "acme_order_failed")),
    Route("DELETE", "/v1/pki/acme/orders/{id}", delete_order, **_p(ORDER_ID), target=_on(ORDERS, "manage"),
          statuses=(204,), errors=O_NF),
)
