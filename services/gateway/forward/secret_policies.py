"""``/v1/secret-policies`` and ``/v1/rotation-policies`` (api.md §5.1, §5.2).

Secret policies are rules every write to a matching secret path must keep; rotation policies give
matching secrets a generated value every ``interval``. Both: scope ``admin``; policy resource
``<kind>/<name>`` (``manage`` to create, replace or delete, ``read``/``list`` to see). The secrets
service keeps and applies them (atomically with each write).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from services.gateway.edge.openapi import NAME
from services.gateway.edge.routes import PageQuery, Route, context, model_response, query, read_model
from services.gateway.forward.access import authorize, listed
from services.gateway.state import state
from shared.contracts import Contract, PageRequest, parse
from shared.contracts.secrets import (
    RotationPolicyBody,
    RotationPolicyCreate,
    SecretPolicyBody,
    SecretPolicyCreate,
    SecretPolicyRef,
    SecretsClient,
)


@dataclass(frozen=True)
class PolicyKind:
    """One kind of policy the secrets service keeps: its URL, resource, models and client calls."""

    resource: str  # "secret-policies": the URL's last segment and the policy resource's prefix
    create_model: type[Contract]
    body_model: type[Contract]
    prefix: str  # the client's method prefix: "policy" → policy_create, policy_get, …
    not_found: str
    errors: tuple[str, ...]

    def call(self, request: web.Request, verb: str) -> Callable[..., Awaitable[Any]]:
        client: SecretsClient = state(request).secrets
        return getattr(client, f"{self.prefix}_{verb}")  # type: ignore[no-any-return]


def _name(request: web.Request) -> str:
    return request.match_info["name"][:200]


def _routes(kind: PolicyKind) -> tuple[Route, ...]:
    async def create(request: web.Request) -> web.Response:
        body = await read_model(request, kind.create_model)
        await authorize(request, f"{kind.resource}/{body.name}", "manage")  # type: ignore[attr-defined]
        return model_response(await kind.call(request, "create")(context(request), body), status=201)

    async def list_all(request: web.Request) -> web.Response:
        params = query(request, PageQuery)
        page = await kind.call(request, "list")(context(request), PageRequest(limit=params.limit,
                                                                             cursor=params.cursor))
        return await listed(request, page, lambda policy: f"{kind.resource}/{policy.name}")

    async def get(request: web.Request) -> web.Response:
        return model_response(await kind.call(request, "get")(context(request), SecretPolicyRef(
            name=_name(request))))

    async def put(request: web.Request) -> web.Response:
        body = await read_model(request, kind.body_model)
        policy = parse(kind.create_model, {**body.model_dump(), "name": _name(request)})
        return model_response(await kind.call(request, "put")(context(request), policy))

    async def delete(request: web.Request) -> web.Response:
        await kind.call(request, "delete")(context(request), SecretPolicyRef(name=_name(request)))
        return web.Response(status=204)

    def on(capability: str) -> Any:
        return lambda request: (f"{kind.resource}/{_name(request)}", capability)

    common: dict[str, Any] = {"scope": "admin", "params": {"name": {"type": "string", "pattern": NAME}}}
    many, one = f"/v1/{kind.resource}", f"/v1/{kind.resource}/{{name}}"
    return (
        Route("POST", many, create, **common, body=kind.create_model, statuses=(201,),
              errors=("name_conflict", "quota_exceeded", *kind.errors)),
        Route("GET", many, list_all, **common, query=PageQuery, errors=("invalid_cursor",)),
        Route("GET", one, get, **common, target=on("read"), errors=(kind.not_found,)),
        Route("PUT", one, put, **common, target=on("manage"), body=kind.body_model,
              errors=("quota_exceeded", *kind.errors)),
        Route("DELETE", one, delete, **common, target=on("manage"), statuses=(204,), errors=(kind.not_found,)),
    )


SECRET_POLICIES = PolicyKind("secret-policies", SecretPolicyCreate, SecretPolicyBody, "policy",
                             "secret_policy_not_found", ("invalid_glob", "invalid_duration", "invalid_secret_type"))
ROTATION_POLICIES = PolicyKind("rotation-policies", RotationPolicyCreate, RotationPolicyBody, "rotation",
                               "rotation_policy_not_found", ("invalid_glob", "invalid_duration"))

ROUTES: tuple[Route, ...] = (*_routes(SECRET_POLICIES), *_routes(ROTATION_POLICIES))
