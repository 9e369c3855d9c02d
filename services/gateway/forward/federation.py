"""``/v1/federation/backends``: other stores mounted at a path, read through Coffer (api.md §5.4).

Scope ``admin``; policy resource ``federation/<name>`` (``manage`` to create or delete, ``read``/``list``
to see); feature flag ``federation``. Reads under a mount go through the ordinary secret routes (and
their ``secrets/<path>`` policies); the secrets service answers them from the backend.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.edge.openapi import NAME
from services.gateway.edge.routes import PageQuery, Route, context, model_response, query, read_model
from services.gateway.forward.access import authorize, listed
from services.gateway.state import state
from shared.contracts import PageRequest
from shared.contracts.federation import BackendCreate, BackendRef


def _name(request: web.Request) -> str:
    return request.match_info["name"][:200]


async def create_backend(request: web.Request) -> web.Response:
    body = await read_model(request, BackendCreate)
    await authorize(request, f"federation/{body.name}", "manage")
    return model_response(await state(request).federation.create(context(request), body), status=201)


async def list_backends(request: web.Request) -> web.Response:
    params = query(request, PageQuery)
    page = await state(request).federation.list(context(request), PageRequest(limit=params.limit,
                                                                              cursor=params.cursor))
    return await listed(request, page, lambda backend: f"federation/{backend.name}")


async def get_backend(request: web.Request) -> web.Response:
    return model_response(await state(request).federation.get(context(request), BackendRef(name=_name(request))))


async def delete_backend(request: web.Request) -> web.Response:
    await state(request).federation.delete(context(request), BackendRef(name=_name(request)))
    return web.Response(status=204)


def _on(capability: str) -> Any:
    return lambda request: (f"federation/{_name(request)}", capability)


_F: dict[str, Any] = {"scope": "admin", "params": {"name": {"type": "string", "pattern": NAME}}}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/federation/backends", create_backend, **_F, body=BackendCreate, statuses=(201,),
          errors=("name_conflict", "invalid_config", "invalid_path", "invalid_duration", "backend_error",
                  "backend_timeout", "backend_rate_limited")),
    Route("GET", "/v1/federation/backends", list_backends, **_F, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/federation/backends/{name}", get_backend, **_F, target=_on("read"),
          errors=("federation_backend_not_found",)),
    Route("DELETE", "/v1/federation/backends/{name}", delete_backend, **_F, target=_on("manage"), statuses=(204,),
          errors=("federation_backend_not_found",)),
)
