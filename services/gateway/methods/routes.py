"""``/v1/auth/methods`` (api.md §10): a tenant's ``jwt`` methods, their roles, and logging in with them.

A method belongs to the tenant it is made in (resource ``auth-methods/<name>``, scope ``admin``). Logging in
names the tenant with ``X-Tenant-ID`` (the root tenant when absent), takes no bearer token, and answers as
``POST /v1/auth/token`` does. A tenant, method or role that doesn't exist is the same 404 ``role_not_found``
(a caller learns nothing of other tenants' methods). Every login is audited in the tenant with the method,
role and subject (never the JWT) and spends from the ``auth`` rate limit.

The issuer's keys are cached per method (``KeySource``), so a login calls no one but an unknown ``kid``
(at most one fetch a minute per method).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, RootModel, StrictStr

from services.gateway.edge.listener import named_tenant
from services.gateway.edge.middlewares import record_audit
from services.gateway.edge.routes import (
    PageQuery,
    Route,
    at,
    context,
    json_response,
    read_model,
    read_object,
    tenant_of,
)
from services.gateway.iam.routes import authorize, listed
from services.gateway.methods.keys import KeySource, check_urls
from services.gateway.methods.models import JwtConfig, OidcConfig, RoleBody
from services.gateway.methods.oidc import check_redirects, endpoints, seal_secret
from services.gateway.methods.repository import MethodsRepository
from services.gateway.methods.verify import MAX_TOKEN, Claims, verify
from services.gateway.state import GatewayState, state
from shared.contracts import Contract, parse
from shared.errors import AuthenticationRequired, CofferError, PolicyNotFound, RoleNotFound, ValidationError

METHOD_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ROLE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
TENANT_ID = r"^ten_[0-9a-f]{1,60}$"
KEY_SOURCES = 256  # methods whose issuer keys are kept in memory (the least recently used goes)


class JwtMethodCreate(Contract):
    name: StrictStr = Field(pattern=METHOD_NAME)
    type: Literal["jwt"]
    config: JwtConfig


class OidcMethodCreate(Contract):
    name: StrictStr = Field(pattern=METHOD_NAME)
    type: Literal["oidc"]
    config: OidcConfig


class MethodCreate(RootModel[Annotated[JwtMethodCreate | OidcMethodCreate, Field(discriminator="type")]]):
    """What the API describes: a ``jwt`` or an ``oidc`` method, its ``config`` the one ``type`` names (the
    handler reads it with that type's model)."""


class MethodPatch(Contract):
    """A JSON merge patch of ``config`` (RFC 7396); the merged config is checked as on create."""

    config: dict[str, Any]


class Login(Contract):
    role: StrictStr = Field(min_length=1, max_length=63)
    jwt: StrictStr = Field(min_length=1, max_length=MAX_TOKEN)


def method_view(row: Any) -> dict[str, Any]:
    return {"name": row["name"], "type": row["type"], "config": row["config"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def role_view(row: Any) -> dict[str, Any]:
    return {"name": row["name"], "method": row["method"], **row["body"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def _repo(request: web.Request) -> MethodsRepository:
    st = state(request)
    return MethodsRepository(st.system.pool, st.schema)


def new_source(st: GatewayState, config: JwtConfig, name: str) -> KeySource:
    return KeySource(config, st.outbound, name=name, refetch_interval=st.settings.auth_keys_refetch_interval)


def key_source(st: GatewayState, tenant_id: str, row: Any, config: JwtConfig) -> KeySource:
    """The method's cached keys (made anew when the method changed: the row's ``updated_at`` is the version)."""
    cache: OrderedDict[tuple[str, str], tuple[Any, KeySource]] = st.method_keys
    key = (tenant_id, row["name"])
    held = cache.get(key)
    if held is not None and held[0] == row["updated_at"]:
        cache.move_to_end(key)
        return held[1]
    return _keep(st, tenant_id, row, new_source(st, config, row["name"]))


def cached_source(st: GatewayState, tenant_id: str, row: Any) -> KeySource:
    """``key_source`` without parsing the method's config again when its keys are cached (a login's path)."""
    held = st.method_keys.get((tenant_id, row["name"]))
    if held is not None and held[0] == row["updated_at"]:
        st.method_keys.move_to_end((tenant_id, row["name"]))
        return held[1]
    return key_source(st, tenant_id, row, JwtConfig.model_validate(row["config"]))


def _parsed_role(st: GatewayState, tenant_id: str, method: str, name: str, row: Any) -> RoleBody:
    """The role's body as a model, parsed once per version of the role (its ``updated_at``)."""
    key = ("role", tenant_id, method, name)
    held = st.method_keys.get(key)  # type: ignore[call-overload]
    if held is not None and held[0] == row["role_updated_at"]:
        return held[1]
    role = RoleBody.model_validate(row["role_body"])
    st.method_keys[key] = (row["role_updated_at"], role)  # type: ignore[index]
    while len(st.method_keys) > 2 * KEY_SOURCES:
        st.method_keys.popitem(last=False)
    return role


def _keep(st: GatewayState, tenant_id: str, row: Any, source: KeySource) -> KeySource:
    cache: OrderedDict[tuple[str, str], tuple[Any, KeySource]] = st.method_keys
    cache[(tenant_id, row["name"])] = (row["updated_at"], source)
    cache.move_to_end((tenant_id, row["name"]))
    while len(cache) > KEY_SOURCES:
        cache.popitem(last=False)
    return source


async def _checked(request: web.Request, config: JwtConfig, name: str) -> KeySource:
    """A config whose keys can't be had is ``invalid_config``: nothing stored. The checked source (keys
    fetched) is what this replica's logins use next, so the first login fetches nothing."""
    st = state(request)
    check_urls(config, st.outbound)
    source = new_source(st, config, name)
    await source.check()
    return source


async def _method(request: web.Request, tenant_id: str, name: str) -> Any:
    row = await _repo(request).method(tenant_id, name) if len(name) <= 63 else None
    if row is None:
        raise RoleNotFound("auth method not found", details={"method": name[:63]})
    return row


# -- methods -------------------------------------------------------------------------------------------

async def create_method(request: web.Request) -> web.Response:
    data = await read_object(request)
    body = parse(OidcMethodCreate if data.get("type") == "oidc" else JwtMethodCreate, data)
    await authorize(request, f"auth-methods/{body.name}", "write")
    tenant, sealed = tenant_of(request), None
    if isinstance(body.config, OidcConfig):
        if body.config.client_secret is None:
            raise ValidationError.on("config.client_secret", "an oidc method needs its client secret")
        source = await _checked_oidc(request, body.config, body.name)
        sealed = seal_secret(state(request).kms, tenant, body.name, body.config.client_secret)
        stored = body.config.stored()
    else:
        source = await _checked(request, body.config, body.name)
        stored = body.config.model_dump(exclude_none=True)
    row = await _repo(request).create_method(tenant, body.name, body.type, stored, sealed)
    _keep(state(request), tenant, row, source)
    return json_response(method_view(row), status=201)


async def _checked_oidc(request: web.Request, config: OidcConfig, name: str) -> KeySource:
    """As ``_checked``, and the discovery names the endpoints a sign-in needs."""
    check_redirects(config)
    source = await _checked(request, config.as_jwt(), name)
    endpoints(source.document, source.policy)
    return source


async def get_method(request: web.Request) -> web.Response:
    return json_response(method_view(await _method(request, tenant_of(request), request.match_info["name"])))


async def list_methods(request: web.Request) -> web.Response:
    repo, tenant = _repo(request), tenant_of(request)
    return await listed(request, "auth-methods", lambda after, n: repo.list_methods(tenant, after, n),
                        lambda r: r["name"], method_view, lambda r: f"auth-methods/{r['name']}")


async def patch_method(request: web.Request) -> web.Response:
    tenant, name = tenant_of(request), request.match_info["name"]
    patch = parse(MethodPatch, await read_object(request))
    row = await _method(request, tenant, name)
    merged = {k: v for k, v in {**row["config"], **patch.config}.items() if v is not None}
    sealed = None
    if row["type"] == "oidc":
        oidc = parse(OidcConfig, merged)
        source = await _checked_oidc(request, oidc, name)
        if oidc.client_secret is not None:
            sealed = seal_secret(state(request).kms, tenant, name, oidc.client_secret)
        stored = oidc.stored()
    else:
        config = parse(JwtConfig, merged)
        source = await _checked(request, config, name)
        stored = config.model_dump(exclude_none=True)
    updated = await _repo(request).update_method(tenant, name, stored, sealed)
    if updated is None:
        raise RoleNotFound("auth method not found", details={"method": name[:63]})
    _keep(state(request), tenant, updated, source)
    return json_response(method_view(updated))


async def delete_method(request: web.Request) -> web.Response:
    name, tenant = request.match_info["name"], tenant_of(request)
    if not await _repo(request).delete_method(tenant, name[:63]):
        raise RoleNotFound("auth method not found", details={"method": name[:63]})
    state(request).method_keys.pop((tenant, name), None)
    return web.Response(status=204)


# -- roles ---------------------------------------------------------------------------------------------

async def put_role(request: web.Request) -> web.Response:
    tenant, name, role = tenant_of(request), request.match_info["name"], request.match_info["role"]
    body = await read_model(request, RoleBody)
    if not _fits(role, ROLE_NAME):
        raise ValidationError.on("role", "a role name: letters, digits, '.', '_', '-' (at most 63)")
    await _method(request, tenant, name)
    known = {r["name"] for r in await state(request).policies.pool.fetch(
        "SELECT name FROM policies WHERE tenant_id = $1 AND name = ANY($2::text[])", tenant, body.all_policies())}
    missing = [p for p in body.all_policies() if p not in known]
    if missing:
        raise PolicyNotFound(f"policy '{missing[0]}' not found", details={"name": missing[0]})
    row = await _repo(request).put_role(tenant, name, role, body.model_dump(exclude_none=True))
    return json_response(role_view(row))


async def get_role(request: web.Request) -> web.Response:
    tenant, name = tenant_of(request), request.match_info["name"]
    await _method(request, tenant, name)
    return json_response(role_view(await _repo(request).role(tenant, name, request.match_info["role"])))


async def list_roles(request: web.Request) -> web.Response:
    repo, tenant, name = _repo(request), tenant_of(request), request.match_info["name"]
    await _method(request, tenant, name)
    return await listed(request, f"auth-methods/{name}/roles", lambda after, n: repo.list_roles(tenant, name, after, n),
                        lambda r: r["name"], role_view, lambda r: f"auth-methods/{name}")


async def delete_role(request: web.Request) -> web.Response:
    tenant, name = tenant_of(request), request.match_info["name"]
    await _method(request, tenant, name)
    await _repo(request).delete_role(tenant, name, request.match_info["role"][:63])
    return web.Response(status=204)


# -- login ---------------------------------------------------------------------------------------------

def _fits(value: str, pattern: str) -> bool:
    return re.fullmatch(pattern.strip("^$"), value) is not None


async def _login_tenant(request: web.Request, asked: str | None = None) -> str | None:
    """``asked``, else the tenant the request names (``X-Tenant-ID``: an id), else the root tenant; ``None``
    when there is no such tenant."""
    st = state(request)
    asked = asked if asked is not None else await named_tenant(request)
    if asked is None:
        return await st.tenancy.root_tenant_id()
    if not _fits(asked, TENANT_ID):
        return None
    return asked if await st.tenants.tenant(asked) is not None else None


async def login(request: web.Request) -> web.Response:
    """``{role, jwt}`` → a Coffer token for the external identity of the token's ``user_claim``.

    With the method's keys and the role already in memory (most logins), the token is checked first and one
    query then tells whether both are still those versions and what the identity is bound to; otherwise (or
    if anything moved) the method and role are read, then the token checked."""
    st, name = state(request), request.match_info["name"]
    body = await read_model(request, Login)
    tenant = await _login_tenant(request)
    if tenant is None or len(name) > 63:
        raise RoleNotFound(f"role '{body.role}' not found", details={"role": body.role})
    resource = f"auth-methods/{name}/roles/{body.role}"
    quick = await _quick_login(request, st, tenant, name, body)
    if quick is not None:
        return quick
    row = await _repo(request).method_with_role(tenant, name, body.role)
    if row is None or row["type"] != "jwt" or row["role_body"] is None:
        raise RoleNotFound(f"role '{body.role}' not found", details={"role": body.role})
    source = cached_source(st, tenant, row)
    role = _parsed_role(st, tenant, name, body.role, row)
    try:
        claims = await verify(body.jwt, source, source.config, role)
    except AuthenticationRequired as exc:
        await _audit(request, tenant, None, resource, exc, None)
        raise
    return await issue(request, tenant, name, resource, role, claims)


async def _quick_login(request: web.Request, st: GatewayState, tenant: str, name: str,
                       body: Login) -> web.Response | None:
    """The login with what this replica holds, if it holds the method's keys and the role and they are still
    the stored versions; ``None`` to take the long way (nothing cached, a refusal, or a version moved)."""
    keys = st.method_keys.get((tenant, name))
    held = st.method_keys.get(("role", tenant, name, body.role))  # type: ignore[call-overload]
    if keys is None or held is None:
        return None
    source, role = keys[1], held[1]
    try:
        claims = await verify(body.jwt, source, source.config, role)
    except AuthenticationRequired:
        return None  # refused with what is held: the long way reads the current method and role, and says why
    state_row = await _repo(request).login_state(tenant, name, body.role, claims.user, list(role.scopes),
                                                 role.policies_for(claims.groups), (keys[0], held[0]))
    if state_row is None or not state_row["current"]:
        return None
    return await issue(request, tenant, name, f"auth-methods/{name}/roles/{body.role}", role, claims,
                       known=state_row)


async def _login_method(request: web.Request, name: str, role: str, kind: str,
                        asked: str | None = None) -> tuple[str, Any]:
    """The tenant and the method of this ``kind`` a login names; the same 404 for a tenant, method (or a
    method of another type) that isn't there."""
    tenant = await _login_tenant(request, asked)
    row = await _repo(request).method(tenant, name) if tenant is not None and len(name) <= 63 else None
    if row is None or tenant is None or row["type"] != kind:
        raise RoleNotFound(f"role '{role}' not found", details={"role": role})
    return tenant, row


async def issue(request: web.Request, tenant: str, name: str, resource: str, role: RoleBody,
                claims: Claims, known: Any = None) -> web.Response:
    """The Coffer token of a verified login: the external identity of (method, user claim), bound to the
    role's policies (and its ``group_policies`` of the token's groups), audited."""
    st = state(request)
    identity, changed = await _repo(request).external_login(tenant, name, claims.user, list(role.scopes),
                                                            role.policies_for(claims.groups),
                                                            context(request).request_id, known)
    if changed:  # the bindings just changed: this replica's next decision reads them (others hear policy.updated)
        st.authorizer.rules.forget(identity["id"])
    await _audit(request, tenant, identity["id"], resource, None, claims.user)
    scopes = tuple(role.scopes)
    token, ttl = st.signer.issue(identity["id"], tenant, scopes, generation=identity["token_generation"],
                                 ttl=role.ttl_seconds)
    return json_response({"access_token": token, "token_type": "Bearer", "expires_in": ttl,
                          "scope": " ".join(scopes), "tenant_id": tenant})


async def _audit(request: web.Request, tenant: str, identity_id: str | None, resource: str,
                 error: CofferError | None, subject: str | None) -> None:
    reason = error.details.get("reason") if error is not None else None
    step = "/" + request.path.split("/v1/auth/methods/", 1)[-1].split("/", 1)[-1]  # /login, …, /device/token
    await record_audit(request, tenant_id=tenant, identity_id=identity_id,
                       action=f"POST /v1/auth/methods/{request.match_info['name']}{step}"
                              + (f" ({reason})" if reason else ""),
                       resource=resource, outcome=error.code if error else "ok",
                       status=error.status if error else 200,
                       sensitive={"subject": subject} if subject else None)


METHOD = at("auth-methods", "name", "read")
ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/auth/methods", create_method, scope="admin", body=MethodCreate, statuses=(201,),
          errors=("name_conflict", "invalid_config", "invalid_duration")),
    Route("GET", "/v1/auth/methods", list_methods, scope="admin", query=PageQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/auth/methods/{name}", get_method, scope="admin", target=METHOD, errors=("role_not_found",)),
    Route("PATCH", "/v1/auth/methods/{name}", patch_method, scope="admin", body=MethodPatch,
          target=at("auth-methods", "name", "write"), errors=("role_not_found", "invalid_config", "invalid_duration")),
    Route("DELETE", "/v1/auth/methods/{name}", delete_method, scope="admin", statuses=(204,),
          target=at("auth-methods", "name", "delete"), errors=("role_not_found",)),
    Route("PUT", "/v1/auth/methods/{name}/roles/{role}", put_role, scope="admin", body=RoleBody,
          target=at("auth-methods", "name", "write"),
          errors=("role_not_found", "policy_not_found", "invalid_glob", "invalid_duration")),
    Route("GET", "/v1/auth/methods/{name}/roles", list_roles, scope="admin", query=PageQuery, target=METHOD,
          errors=("role_not_found", "invalid_cursor")),
    Route("GET", "/v1/auth/methods/{name}/roles/{role}", get_role, scope="admin", target=METHOD,
          errors=("role_not_found",)),
    Route("DELETE", "/v1/auth/methods/{name}/roles/{role}", delete_role, scope="admin", statuses=(204,),
          target=at("auth-methods", "name", "delete"), errors=("role_not_found",)),
    Route("POST", "/v1/auth/methods/{name}/login", login, public=True, category="auth", body=Login,
          errors=("authentication_required", "role_not_found", "storage_error")),
)
