"""``/v1/secret-policies``: rules every write to a matching secret path must keep (api.md §5.1).

Scope ``admin``; policy resource ``secret-policies/<name>`` (``manage`` to create, replace or delete,
``read``/``list`` to see). The rules are kept and applied by the secrets service, atomically with
each write.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.edge.openapi import NAME
from services.gateway.edge.routes import PageQuery, Route, context, model_response, query, read_model
from services.gateway.forward.access import authorize, listed
from services.gateway.state import state
from shared.contracts import PageRequest, parse
from shared.contracts.secrets import SecretPolicyBody, SecretPolicyCreate, SecretPolicyRef


def _name(request: web.Request) -> str:
    return request.match_info["name"][:200]


async def create_policy(request: web.Request) -> web.Response:
    body = await read_model(request, SecretPolicyCreate)
    await authorize(request, f"secret-policies/{body.name}", "manage")
    return model_response(await state(request).secrets.policy_create(context(request), body), status=201)


async def list_policies(request: web.Request) -> web.Response:
    params = query(request, PageQuery)
    page = await state(request).secrets.policy_list(context(request), PageRequest(limit=params.limit,
                                                                                  cursor=params.cursor))
    return await listed(request, page, lambda policy: f"secret-policies/{policy.name}")


async def get_policy(request: web.Request) -> web.Response:
    return model_response(await state(request).secrets.policy_get(context(request), SecretPolicyRef(
        name=_name(request))))


async def put_policy(request: web.Request) -> web.Response:
    body = await read_model(request, SecretPolicyBody)
    policy = parse(SecretPolicyCreate, {**body.model_dump(), "name": _name(request)})
    return model_response(await state(request).secrets.policy_put(context(request), policy))


async def delete_policy(request: web.Request) -> web.Response:
    await state(request).secrets.policy_delete(context(request), SecretPolicyRef(name=_name(request)))
    return web.Response(status=204)


def _on(capability: str) -> Any:
    return lambda request: (f"secret-policies/{_name(request)}", capability)


_S: dict[str, Any] = {"scope": "admin", "params": {"name": {"type": "string", "pattern": NAME}}}
ERRORS = ("invalid_glob", "invalid_duration", "invalid_secret_type")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/secret-policies", create_policy, **_S, body=SecretPolicyCreate, statuses=(201,),
          errors=("name_conflict", *ERRORS)),
    Route("GET", "/v1/secret-policies", list_policies, **_S, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/secret-policies/{name}", get_policy, **_S, target=_on("read"),
          errors=("secret_policy_not_found",)),
    Route("PUT", "/v1/secret-policies/{name}", put_policy, **_S, target=_on("manage"), body=SecretPolicyBody,
          errors=ERRORS),
    Route("DELETE", "/v1/secret-policies/{name}", delete_policy, **_S, target=_on("manage"), statuses=(204,),
          errors=("secret_policy_not_found",)),
)
