"""``/v1/policies`` and ``/v1/bindings`` (api.md §4); every change makes every replica forget cached rules."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.edge.routes import (
    PageQuery,
    Route,
    at,
    context,
    json_response,
    principal,
    read_model,
    tenant_of,
)
from services.gateway.iam import domain
from services.gateway.iam.models import BindingCreate, PolicyBody, PolicyCreate, binding_view, policy_view
from services.gateway.iam.policy import parse_rules
from services.gateway.iam.routes import authorize, listed
from services.gateway.state import state
from shared.errors import ValidationError


async def create_policy(request: web.Request) -> web.Response:
    body = await read_model(request, PolicyBody)
    if body.name is None:
        raise ValidationError.on("name", "Field required")
    parse_rules(body.rules)
    await authorize(request, f"policies/{body.name}", "write")
    st = state(request)
    row = await st.policies.create_policy(tenant_of(request), {
        "id": domain.new_id("pol"), "name": body.name, "description": body.description, "rules": body.rules,
        "request": _request_rule(body)},
        context(request).request_id)
    st.authorizer.rules.forget()  # here at once; other replicas on the policy.* event
    return json_response(policy_view(row), status=201)


def _request_rule(body: PolicyBody) -> dict[str, Any] | None:
    """The policy's ``request`` as stored (``None``: it can't be asked for)."""
    return body.request.model_dump(mode="json") if body.request is not None else None


async def get_policy(request: web.Request) -> web.Response:
    return json_response(policy_view(await state(request).policies.policy(tenant_of(request),
                                                                          request.match_info["name"])))


async def list_policies(request: web.Request) -> web.Response:
    repo, tenant = state(request).policies, tenant_of(request)
    return await listed(request, "policies", lambda after, n: repo.list_policies(tenant, after, n),
                        lambda r: r["name"], policy_view, lambda r: f"policies/{r['name']}")


async def put_policy(request: web.Request) -> web.Response:
    body = await read_model(request, PolicyBody)
    name = request.match_info["name"]
    if body.name is not None and body.name != name:
        raise ValidationError.on("name", "differs from the URL")
    parse_rules(body.rules)
    st = state(request)
    row = await st.policies.replace_policy(tenant_of(request), name, body.description, body.rules,
                                           context(request).request_id, _request_rule(body))
    st.authorizer.rules.forget()
    return json_response(policy_view(row))


async def delete_policy(request: web.Request) -> web.Response:
    st = state(request)
    await st.policies.delete_policy(tenant_of(request), request.match_info["name"], context(request).request_id)
    st.authorizer.rules.forget()
    return web.Response(status=204)


async def create_binding(request: web.Request) -> web.Response:
    body = await read_model(request, BindingCreate)
    await authorize(request, f"policies/{body.policy}", "manage")
    st = state(request)
    row = await st.policies.create_binding(tenant_of(request), domain.new_id("bnd"), body.policy, body.identity_id,
                                           context(request).request_id)
    st.authorizer.rules.forget()
    return json_response(binding_view(row), status=201)


async def get_binding(request: web.Request) -> web.Response:
    row = await state(request).policies.binding(tenant_of(request), request.match_info["id"])
    await authorize(request, f"policies/{row['policy']}", "read")
    return json_response(binding_view(row))


async def list_bindings(request: web.Request) -> web.Response:
    repo, tenant = state(request).policies, tenant_of(request)
    return await listed(request, "bindings", lambda after, n: repo.list_bindings(tenant, after, n),
                        lambda r: r["id"], binding_view, lambda r: f"policies/{r['policy']}")


async def delete_binding(request: web.Request) -> web.Response:
    """A standing binding is deleted; a grant ends as its access request revoked (api.md §14)."""
    st, tenant = state(request), tenant_of(request)
    row = await st.policies.binding(tenant, request.match_info["id"])
    await authorize(request, f"policies/{row['policy']}", "manage")
    if row["request_id"] is not None:
        await st.access.end(tenant, row["request_id"], "revoked", principal(request).identity_id, None,
                            context(request).request_id)
    else:
        await st.policies.delete_binding(tenant, row["id"], context(request).request_id)
    st.authorizer.rules.forget()
    return web.Response(status=204)


_LIST = {"scope": "admin", "query": PageQuery, "errors": ("invalid_cursor",)}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/policies", create_policy, scope="admin", body=PolicyBody, statuses=(201,),
          doc_bodies={"/v1/policies": PolicyCreate},
          errors=("name_conflict", "invalid_policy", "invalid_glob", "invalid_duration")),
    Route("GET", "/v1/policies", list_policies, **_LIST),  # type: ignore[arg-type]
    Route("GET", "/v1/policies/{name}", get_policy, scope="admin", target=at("policies", "name", "read"),
          errors=("policy_not_found",)),
    Route("PUT", "/v1/policies/{name}", put_policy, scope="admin", target=at("policies", "name", "write"),
          body=PolicyBody, errors=("policy_not_found", "invalid_policy", "invalid_glob", "invalid_duration")),
    Route("DELETE", "/v1/policies/{name}", delete_policy, scope="admin", target=at("policies", "name", "delete"),
          statuses=(204,), errors=("policy_not_found", "policy_in_use")),
    Route("POST", "/v1/bindings", create_binding, scope="admin", body=BindingCreate, statuses=(201,),
          errors=("policy_not_found", "identity_not_found", "binding_conflict")),
    Route("GET", "/v1/bindings", list_bindings, **_LIST),  # type: ignore[arg-type]
    Route("GET", "/v1/bindings/{id}", get_binding, scope="admin", errors=("binding_not_found",)),
    Route("DELETE", "/v1/bindings/{id}", delete_binding, scope="admin", statuses=(204,),
          errors=("binding_not_found",)),
)
