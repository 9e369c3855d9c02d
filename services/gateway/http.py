"""HTTP plumbing of the gateway: the route table, the edge and auth middlewares, body parsing.

Every failure, from any layer, leaves through ``edge_middleware`` as the one
envelope with its code's status and the request id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel

from services.gateway.audit import AuditLog
from services.gateway.authz import AUDIT_TARGET, Guard
from services.gateway.domain import Principal
from services.gateway.limits import Allowance, MinuteQuota, RateLimiter, category_of
from services.gateway.signing import TokenSigner
from shared.context import RequestContext, sane_request_id
from shared.contracts import parse
from shared.errors import (
    AuthenticationRequired,
    CofferError,
    Forbidden,
    InsufficientScope,
    InternalError,
    InvalidRequest,
    StorageError,
    envelope,
)
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("coffer.gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Route:
    """One endpoint.

    ``public`` ones need no token; ``scope`` is what a token must hold;
    ``target`` gives the (resource path, capability) a policy must allow, when
    the URL alone says (handlers whose resource is in the body, and lists,
    call ``Guard.authorize`` / ``Guard.may`` themselves).
    """

    method: str
    path: str
    handler: Handler
    public: bool = False
    scope: str | None = None
    #: platform-wide (acts on every tenant): root admins only, whatever policies say
    platform: bool = False
    #: the rate-limit category, when not the method's (``read`` / ``write``)
    category: str | None = None
    target: Callable[[web.Request], tuple[str, str]] | None = None
    # -- for the OpenAPI description (services/gateway/openapi.py) --
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    #: success status, and the codes this route can answer beyond the common ones
    statuses: tuple[int, ...] = (200,)
    errors: tuple[str, ...] = ()
    #: documented paths when one route serves several (``{path}:restore`` ...)
    doc_paths: tuple[str, ...] = ()


ROUTES = web.AppKey("routes", dict)  # handler -> Route
CONTEXT = web.RequestKey("ctx", RequestContext)
PRINCIPAL = web.RequestKey("principal", Principal)
SIGNER = web.AppKey("signer", TokenSigner)
GUARD = web.AppKey("guard", Guard)
LIMITER = web.AppKey("limiter", RateLimiter)
MINUTE_QUOTA = web.AppKey("minute_quota", MinuteQuota)
AUDIT = web.AppKey("audit", AuditLog)
ALLOWANCE = web.RequestKey("allowance", Allowance)
#: sensitive request fields a handler wants in the audit entry (stored as HMACs only)
AUDIT_FIELDS = web.RequestKey("audit_fields", dict)
MAX_BODY = web.AppKey("max_body", int)


async def hide_server_version(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: don't advertise the Python and aiohttp versions."""
    response.headers["Server"] = "coffer"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def model_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A contract model as the JSON answer."""
    return json_response(model.model_dump(mode="json"), status, headers)


def error_response(error: CofferError, request_id: str) -> web.Response:
    return json_response(envelope(error, request_id), status=error.status, headers=error.headers)


def context(request: web.Request) -> RequestContext:
    """The bus context of this request (request id + caller)."""
    return request[CONTEXT]


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _translate(exc: web.HTTPException, request: web.Request) -> CofferError:
    if isinstance(exc, web.HTTPNotFound):
        return InvalidRequest(f"no route for {request.method} {request.path[:200]}")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return InvalidRequest(
            f"method {request.method} not allowed here",
            details={"allowed_methods": sorted(exc.allowed_methods)},
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return InvalidRequest(
            "request body too large", details={"max_bytes": request.app[MAX_BODY]}
        )
    return InvalidRequest(exc.reason)


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id in and out, one access log line, every failure → the envelope."""
    request_id = sane_request_id(request.headers.get("X-Request-ID"))
    ctx = RequestContext(request_id=request_id)
    ctx.bind()
    request[CONTEXT] = ctx
    started = time.perf_counter()
    try:
        response = await handler(request)
    except CofferError as exc:
        response = error_response(exc, request_id)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_translate(exc, request), request_id)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("request_crashed", method=request.method, route=_route_name(request))
        response = error_response(InternalError("unexpected error"), request_id)
    response.headers["X-Request-ID"] = request_id
    if request.path.startswith("/v1/"):
        # any /v1 answer can carry a secret, a key or a token (and errors are not worth caching)
        response.headers["Cache-Control"] = "no-store"
    _rate_headers(request, response)
    error_code = None
    if response.status >= 400 and isinstance(response, web.Response) and response.body:
        error_code = _code_of(response)
    took = time.perf_counter() - started
    route = _route_name(request)
    HTTP_REQUESTS.labels(request.method, route, error_code or str(response.status)).inc()
    HTTP_LATENCY.labels(request.method, route).observe(took)
    log.info("http_request", method=request.method, route=route, status=response.status, code=error_code,
             duration_ms=round(took * 1000, 2))
    return response


def _rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``X-RateLimit-*`` on every response: the bucket this request spent from, or the caller's address's."""
    if "X-RateLimit-Limit" in response.headers:  # a 429 carries its own
        return
    allowance = request.get(ALLOWANCE)
    if allowance is None:
        allowance = request.app[LIMITER].peek(category_of(request.method, request.path),
                                              f"ip:{request.app[GUARD].client_ip(request)}")
    response.headers.update(allowance.headers())


def _code_of(response: web.Response) -> str | None:
    try:
        body = orjson.loads(response.body)  # type: ignore[arg-type]
        return str(body["error"]["code"])
    except Exception:  # noqa: BLE001
        return None


def _route_name(request: web.Request) -> str:
    """The route template (never the raw path, which may hold secret paths)."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "<unmatched>"


def route_of(request: web.Request) -> Route | None:
    return request.app[ROUTES].get(request.match_info.handler)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The checks of api.md §1, in order: authentication (401) → maintenance / feature (503) →
    tenant (403) → scope (403) → policy (403) → rate limit (429) → quota (429) → the handler.

    Callers that are not (yet) authenticated are limited per client address; a
    request that got past authentication leaves an audit entry before its
    response does.
    """
    route = route_of(request)
    guard, limiter = request.app[GUARD], request.app[LIMITER]
    category = (route.category if route else None) or category_of(request.method, request.path)
    anonymous = f"ip:{guard.client_ip(request)}"
    if route is None or route.public:
        request[ALLOWANCE] = limiter.take(category, anonymous)
        guard.check_open(request.path)
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationRequired("missing bearer token")
        who = await request.app[SIGNER].verify(token.strip())
        guard.check_revoked(who)
    except CofferError:
        request[ALLOWANCE] = limiter.take("auth", anonymous)  # guessing tokens costs the address
        raise
    request[PRINCIPAL] = who
    outcome, status = "ok", 200
    try:
        response = await _authorised(request, handler, route, who, category)
        status = response.status
        return response
    except CofferError as exc:
        outcome, status = exc.code, exc.status
        raise
    except web.HTTPException as exc:
        outcome, status = "invalid_request", 400 if exc.status >= 400 else exc.status
        raise
    except Exception:
        outcome, status = "internal_error", 500
        raise
    finally:
        await _audit(request, route, who, outcome, status)


async def _authorised(request: web.Request, handler: Handler, route: Route, who: Principal,
                      category: str) -> web.StreamResponse:
    guard = request.app[GUARD]
    guard.check_open(request.path)
    tenant_id = await guard.resolve_tenant(request, who)
    quotas = await guard.quotas(tenant_id)
    ctx = context(request).model_copy(update={
        "tenant_id": tenant_id, "identity_id": who.identity_id, "scopes": tuple(sorted(who.scopes)),
        "quotas": {k: v for k, v in quotas.items() if isinstance(v, int)}})
    request[CONTEXT] = ctx
    ctx.bind()
    if route.scope and route.scope not in who.scopes:
        raise InsufficientScope(
            f"this call needs the '{route.scope}' scope", details={"required_scope": route.scope}
        )
    if route.platform and not ("admin" in who.scopes and await guard.is_root(who.tenant_id)):
        raise Forbidden("platform-wide operations are for the root tenant's admins")
    if route.target is not None:
        resource, capability = route.target(request)
        await guard.authorize(request, who, resource, capability)
    request[ALLOWANCE] = request.app[LIMITER].take(category, f"idn:{who.identity_id}")
    request.app[MINUTE_QUOTA].take(tenant_id, ctx.quota("requests_per_minute"))
    return await handler(request)


async def _audit(request: web.Request, route: Route, who: Principal, outcome: str, status: int) -> None:
    """Write the audit entry; if that fails the request fails too (``storage_error``)."""
    resource, capability = request.get(AUDIT_TARGET, (route.path, ""))
    try:
        await request.app[AUDIT].record(
            tenant_id=context(request).tenant_id or who.tenant_id, identity_id=who.identity_id,
            action=f"{request.method} {route.path}" + (f" ({capability})" if capability else ""),
            resource=str(resource), outcome=outcome, status=status,
            client_ip=str(request.app[GUARD].client_ip(request) or "") or None,
            request_id=context(request).request_id, sensitive=request.get(AUDIT_FIELDS))
    except Exception as exc:  # noqa: BLE001 - no audit entry, no answer
        log.error("audit_write_failed", error=type(exc).__name__)
        raise StorageError("the audit log could not be written") from None


async def read_model(request: web.Request, model: type[M], *, allow_form: bool = False) -> M:
    """Parse the body into ``model``: ``invalid_request`` if it is not a JSON object,
    ``validation_error`` (``details.fields``) if a field is wrong. Input values are never echoed."""
    return parse(model, await read_object(request, allow_form=allow_form))


async def read_object(request: web.Request, *, allow_form: bool = False) -> dict[str, Any]:
    """The body as a JSON object (or an OAuth2-style form), else ``invalid_request``."""
    raw = await request.read()
    ctype = request.content_type
    data: Any
    # curl -d sends JSON as a form unless told otherwise: accept a JSON object either way.
    if allow_form and ctype == "application/x-www-form-urlencoded" and not raw.lstrip().startswith(b"{"):
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("form body is malformed") from None
        data = dict(pairs)
        if "scope" in data:
            data["scopes"] = data.pop("scope").split()
    else:
        if not raw:
            data = {}
        else:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data
