"""``/v1/engines`` and ``/v1/leases``: the gateway's side of dynamic credentials (api.md §7).

Scope ``leases``. Policy resources: ``engines/<name>`` (the engine: create,
read, rotate, delete — ``manage``/``read``; revoke-prefix of all its leases
— ``revoke``), ``engines/<name>/roles/<role>`` (``manage``/``read`` the role,
``issue`` credentials, ``revoke`` a prefix of its leases) and ``leases/<id>``.
A lease is authorised once fetched, through its own resource or its role's:
who may ``issue`` from a role can usually ``read``/``revoke`` its leases by a
policy on the role alone. Who may not even ``read`` a lease is told it does
not exist, as for an id of another tenant.

Names that can't be an engine's or a role's (a slash, control characters,
more than 63 characters) are not found before any policy is asked: no
resource path is built from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import Field

from services.gateway.edge.openapi import NAME
from services.gateway.edge.routes import PageQuery, Route, context, model_response, principal, query, read_model
from services.gateway.forward.access import authorize, fetched, listed, listed_through
from services.gateway.state import state
from shared.contracts import Empty, parse
from shared.contracts.lease import (
    ENGINE_NAME,
    CredentialsBody,
    CredentialsRequest,
    EngineCreate,
    EnginePatch,
    EnginePatchBody,
    EngineRef,
    LeaseClient,
    LeaseList,
    LeaseRef,
    LeaseView,
    PageRequest,
    Renew,
    RenewBody,
    RevokePrefix,
    RoleBody,
    RoleList,
    RolePut,
    RoleRef,
)
from shared.errors import EngineNotFound, InvalidRequest, InvalidRole, LeaseNotFound, RoleNotFound

_NAME = re.compile(ENGINE_NAME)
_LEASE_ID = re.compile(r"^lea_[0-9a-f]{1,60}$")


class LeaseQuery(PageQuery):
    engine: str | None = Field(None, max_length=200)
    role: str | None = Field(None, max_length=200)


def _lease(request: web.Request) -> LeaseClient:
    return state(request).lease


def _engine(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME.fullmatch(name):
        raise EngineNotFound(f"engine '{name[:80]}' not found", details={"name": name[:80]})
    return name


def _role(request: web.Request) -> tuple[str, str | None]:
    """The role's name and the action after ``:`` (``credentials``), checked."""
    name, sep, action = request.match_info["role"].partition(":")
    if sep and (request.method != "POST" or action != "credentials"):
        raise InvalidRequest(f"no route for {request.method} /v1/engines/…/roles/…:{action[:40]}")
    if not _NAME.fullmatch(name):
        if request.method == "PUT":
            raise InvalidRole("a role name is 1-63 of a-z, 0-9, _ and -, starting with a letter or digit",
                              details={"name": name[:80]})
        raise RoleNotFound(f"role '{name[:80]}' not found", details={"name": name[:80]})
    return name, action or None


def _lease_id(request: web.Request) -> str:
    lease_id = request.match_info["id"]
    if not _LEASE_ID.fullmatch(lease_id):
        raise LeaseNotFound(f"lease '{lease_id[:64]}' not found", details={"id": lease_id[:64]})
    return lease_id


def _engine_target(capability: str) -> Callable[[web.Request], tuple[str, str]]:
    return lambda request: (f"engines/{_engine(request)}", capability)


def _role_target(request: web.Request) -> tuple[str, str]:
    engine, (role, action) = _engine(request), _role(request)
    capability = {"GET": "read", "PUT": "manage", "DELETE": "manage"}.get(request.method, "issue")
    if request.method == "POST" and action is None:
        raise InvalidRequest("no route for POST /v1/engines/{name}/roles/{role}: use :credentials")
    return f"engines/{engine}/roles/{role}", capability


def _role_resource(lease: LeaseView) -> str:
    return f"engines/{lease.engine}/roles/{lease.role}"


def _lease_resources(lease: LeaseView) -> tuple[str, ...]:
    return f"leases/{lease.id}", _role_resource(lease)


# -- engines -----------------------------------------------------------------------------------

async def create_engine(request: web.Request) -> web.Response:
    body = await read_model(request, EngineCreate)
    await authorize(request, f"engines/{body.name}", "manage")
    return model_response(await _lease(request).engine_create(context(request), body), status=201)


async def list_engines(request: web.Request) -> web.Response:
    params = query(request, PageQuery)
    page = await _lease(request).engine_list(context(request), PageRequest(limit=params.limit, cursor=params.cursor))
    return await listed(request, page, lambda engine: f"engines/{engine.name}")


async def get_engine(request: web.Request) -> web.Response:
    return model_response(await _lease(request).engine_get(context(request), EngineRef(name=_engine(request))))


async def patch_engine(request: web.Request) -> web.Response:
    body = await read_model(request, EnginePatchBody)
    return model_response(await _lease(request).engine_patch(context(request), EnginePatch(
        name=_engine(request), rotate_admin_password=body.rotate_admin_password)))


async def delete_engine(request: web.Request) -> web.Response:
    await _lease(request).engine_delete(context(request), EngineRef(name=_engine(request)))
    return web.Response(status=204)


# -- roles and credentials ---------------------------------------------------------------------------

async def list_roles(request: web.Request) -> web.Response:
    engine, params = _engine(request), query(request, PageQuery)
    page = await _lease(request).role_list(context(request), RoleList(
        engine=engine, limit=params.limit, cursor=params.cursor))
    return await listed(request, page, lambda role: f"engines/{engine}/roles/{role.name}")


async def put_role(request: web.Request) -> web.Response:
    engine, (name, _) = _engine(request), _role(request)
    body = await read_model(request, RoleBody)
    role = await _lease(request).role_put(context(request), RolePut(**body.model_dump(), engine=engine, name=name))
    return model_response(role, status=201 if role.created_at == role.updated_at else 200)


async def get_role(request: web.Request) -> web.Response:
    engine, (name, _) = _engine(request), _role(request)
    return model_response(await _lease(request).role_get(context(request), RoleRef(engine=engine, name=name)))


async def delete_role(request: web.Request) -> web.Response:
    engine, (name, _) = _engine(request), _role(request)
    await _lease(request).role_delete(context(request), RoleRef(engine=engine, name=name))
    return web.Response(status=204)


async def credentials(request: web.Request) -> web.Response:
    engine, (name, _) = _engine(request), _role(request)
    body = await read_model(request, CredentialsBody)
    creds = await _lease(request).credentials(context(request), CredentialsRequest(
        engine=engine, role=name, ttl=body.ttl))
    return model_response(creds, status=201)


# -- leases --------------------------------------------------------------------------------------------

async def list_leases(request: web.Request) -> web.Response:
    params = query(request, LeaseQuery)
    page = await _lease(request).lease_list(context(request), parse(LeaseList, params.model_dump()))
    return await listed_through(request, page, _lease_resources)


async def _fetched_lease(request: web.Request, capability: str) -> LeaseView:
    lease = await _lease(request).lease_get(context(request), LeaseRef(id=_lease_id(request)))
    hidden = LeaseNotFound(f"lease '{lease.id}' not found", details={"id": lease.id})
    await fetched(request, _lease_resources(lease), capability, hidden)
    return lease


async def _allowed_lease(request: web.Request, capability: str) -> str:
    """The lease's id once the caller may act on it: straight away when a policy allows it on
    ``leases/<id>`` (no fetch), else fetched and allowed through its role, or hidden."""
    lease_id, st, who = _lease_id(request), state(request), principal(request)
    if await st.authorizer.may(request, who, f"leases/{lease_id}", capability):
        await st.authorizer.authorize(request, who, f"leases/{lease_id}", capability)
        return lease_id
    return (await _fetched_lease(request, capability)).id


async def get_lease(request: web.Request) -> web.Response:
    return model_response(await _fetched_lease(request, "read"))


async def lease_action(request: web.Request) -> web.Response:
    """``:renew`` ``{increment?}`` (capability ``write``) or ``:revoke`` (``revoke``; 204 once the user is
    gone, 202 while another worker is removing it)."""
    if request.match_info["action"] == "renew":
        lease_id = await _allowed_lease(request, "write")
        body = await read_model(request, RenewBody)
        return model_response(await _lease(request).renew(context(request), Renew(
            id=lease_id, increment=body.increment)))
    lease_id = await _allowed_lease(request, "revoke")
    await read_model(request, Empty)  # no body, or {}: anything else is refused, not ignored
    ended = await _lease(request).revoke(context(request), LeaseRef(id=lease_id))
    if ended.status in ("revoked", "expired"):
        return web.Response(status=204)
    return model_response(ended, status=202)


async def revoke_prefix(request: web.Request) -> web.Response:
    body = await read_model(request, RevokePrefix)
    if not _NAME.fullmatch(body.engine):
        raise EngineNotFound(f"engine '{body.engine[:80]}' not found", details={"name": body.engine[:80]})
    if body.role is not None and not _NAME.fullmatch(body.role):
        raise RoleNotFound(f"role '{body.role[:80]}' not found", details={"name": body.role[:80]})
    resource = f"engines/{body.engine}" + (f"/roles/{body.role}" if body.role else "")
    await authorize(request, resource, "revoke")
    return model_response(await _lease(request).revoke_prefix(context(request), body), status=202)


_L: dict[str, Any] = {"scope": "leases", "params": {"name": {"type": "string", "pattern": NAME}}}
ENGINE = "/v1/engines/{name}"
ROLE = "/v1/engines/{name}/roles/{role}"
TARGET_ERRORS = ("engine_unreachable", "invalid_config")

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/engines", create_engine, **_L, body=EngineCreate, statuses=(201,),
          errors=("name_conflict", *TARGET_ERRORS)),
    Route("GET", "/v1/engines", list_engines, **_L, query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", ENGINE, get_engine, **_L, target=_engine_target("read"), errors=("engine_not_found",)),
    Route("PATCH", ENGINE, patch_engine, **_L, target=_engine_target("manage"), body=EnginePatchBody,
          errors=("engine_not_found", *TARGET_ERRORS)),
    Route("DELETE", ENGINE, delete_engine, **_L, target=_engine_target("manage"), statuses=(204,),
          errors=("engine_not_found", "engine_in_use")),
    Route("GET", ENGINE + "/roles", list_roles, **_L, query=PageQuery,
          errors=("engine_not_found", "invalid_cursor")),
    Route("PUT", ROLE, put_role, **_L, target=_role_target, body=RoleBody, statuses=(200, 201),
          errors=("engine_not_found", "invalid_role", "invalid_duration")),
    Route("GET", ROLE, get_role, **_L, target=_role_target, errors=("engine_not_found", "role_not_found")),
    Route("DELETE", ROLE, delete_role, **_L, target=_role_target, statuses=(204,),
          errors=("engine_not_found", "role_not_found")),
    Route("POST", ROLE, credentials, **_L, target=_role_target, body=CredentialsBody, statuses=(201,),
          doc_paths=(ROLE + ":credentials",),
          errors=("engine_not_found", "role_not_found", "ttl_exceeds_max", "invalid_duration", "quota_exceeded",
                  "invalid_role", *TARGET_ERRORS)),
    Route("GET", "/v1/leases", list_leases, **_L, query=LeaseQuery, errors=("invalid_cursor",)),
    Route("POST", "/v1/leases:revoke-prefix", revoke_prefix, **_L, body=RevokePrefix, statuses=(202,),
          errors=("engine_not_found", "role_not_found")),
    Route("GET", "/v1/leases/{id}", get_lease, **_L, errors=("lease_not_found",)),
    Route("POST", "/v1/leases/{id}:{action:(renew|revoke)}", lease_action, **_L, body=RenewBody,
          statuses=(200, 202, 204), doc_paths=("/v1/leases/{id}:renew", "/v1/leases/{id}:revoke"),
          doc_bodies={"/v1/leases/{id}:revoke": Empty},
          errors=("lease_not_found", "lease_expired", "invalid_duration", "engine_unreachable")),
)
