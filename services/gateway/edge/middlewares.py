"""The two middlewares every request passes: the edge (ids, envelope, headers, metrics) and auth.

Every failure, from any layer, leaves through ``edge_middleware`` as the one
envelope with its code's status and the request id. ``auth_middleware`` runs
the checks of api.md §1 in order and writes the audit entry.
"""

from __future__ import annotations

import asyncio
import re
import time

import orjson
import structlog
from aiohttp import web

from services.gateway.edge.limits import Allowance, category_of
from services.gateway.edge.listener import bearer_of, listener_of
from services.gateway.edge.routes import (
    AUDIT_FIELDS,
    AUDIT_NOTES,
    AUDIT_TARGET,
    AUDITED,
    CONTEXT,
    PRINCIPAL,
    Handler,
    Route,
    context,
    error_response,
)
from services.gateway.iam.domain import Principal
from services.gateway.state import state
from shared.context import RequestContext, sane_request_id
from shared.errors import (
    AuthenticationRequired,
    CofferError,
    Forbidden,
    InsufficientScope,
    InternalError,
    InvalidRequest,
)
from shared.failures import storage_error, storage_failure
from shared.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("coffer.gateway")
ALLOWANCE = web.RequestKey("allowance", Allowance)


async def hide_server_version(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: don't advertise the Python and aiohttp versions."""
    response.headers["Server"] = "coffer"


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
            "request body too large", details={"max_bytes": state(request).settings.max_body_bytes}
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
    except Exception as exc:
        if storage_failure(exc):
            log.exception("request_storage_failed", method=request.method, route=_route_name(request))
            response = error_response(storage_error(exc, "the gateway's"), request_id)
        else:
            log.exception("request_crashed", method=request.method, route=_route_name(request))
            response = error_response(InternalError("unexpected error"), request_id)
    if not response.prepared:  # a stream's (events) were set before it started
        stamp(request, response)
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


def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """The headers every answer carries: its request id, ``no-store`` under /v1, the rate-limit state (a
    streamed answer gets them from its handler, before it starts)."""
    response.headers["X-Request-ID"] = context(request).request_id
    if request.path.startswith("/v1/"):
        # any /v1 answer can carry a secret, a key or a token (and errors are not worth caching)
        response.headers["Cache-Control"] = "no-store"
    _rate_headers(request, response)


def _rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``X-RateLimit-*`` on every response: the bucket this request spent from, or the caller's address's."""
    if "X-RateLimit-Limit" in response.headers:  # a 429 carries its own
        return
    allowance = request.get(ALLOWANCE)
    if allowance is None:
        st = state(request)
        allowance = st.limiter.peek(category_of(request.method, request.path), f"ip:{st.clients.of(request)}")
    response.headers.update(allowance.headers())


def _code_of(response: web.Response) -> str | None:
    try:
        body = orjson.loads(response.body)  # type: ignore[arg-type]
        return str(body["error"]["code"])
    except Exception:  # noqa: BLE001
        return None


_PARAM_REGEX = re.compile(r"\{(\w+):[^{}]*\}")


def template(path: str) -> str:
    """A route's path with its parameters' regular expressions left out: ``/v1/secrets/{tail}``."""
    return _PARAM_REGEX.sub(r"{\1}", path)


def _route_name(request: web.Request) -> str:
    """The route template (never the raw path, which may hold secret paths)."""
    info = request.match_info.route.resource
    return template(info.canonical) if info is not None else "<unmatched>"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The checks of api.md §1, in order: authentication (401) → maintenance / feature (503) →
    tenant (403) → scope (403) → policy (403) → rate limit (429) → quota (429) → the handler.

    Callers that are not (yet) authenticated are limited per client address; a
    request that got past authentication leaves an audit entry before its
    response does.
    """
    st = state(request)
    route = st.routes.get(request.match_info.handler)
    category = (route.category if route else None) or category_of(request.method, request.path)
    anonymous = f"ip:{st.clients.of(request)}"
    if route is None or route.public:
        request[ALLOWANCE] = st.limiter.take(category, anonymous)
        st.gates.check_open(request.path)
        return await handler(request)
    token = bearer_of(request)
    try:
        if token is None:
            raise AuthenticationRequired("missing bearer token")
        who = await st.signer.verify(token)
        st.revocations.check(who)
    except CofferError:
        request[ALLOWANCE] = st.limiter.take("auth", anonymous)  # guessing tokens costs the address
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
    except Exception as exc:
        answer = storage_error(exc, "the gateway's") if storage_failure(exc) else InternalError()
        outcome, status = answer.code, answer.status
        raise
    finally:
        await audit_request(request, outcome, status)


async def audit_request(request: web.Request, outcome: str = "ok", status: int = 200) -> None:
    """The request's audit entry (``record_audit``): what it did, to what, and how it ended. Written once:
    a streamed answer writes it when its stream starts, not hours later when it ends."""
    if request.get(AUDITED):
        return
    request[AUDITED] = True
    route, who = state(request).routes[request.match_info.handler], request[PRINCIPAL]
    resource, capability = request.get(AUDIT_TARGET, (route.path, ""))
    await record_audit(request, tenant_id=context(request).tenant_id or who.tenant_id,
                       identity_id=who.identity_id, resource=str(resource), outcome=outcome, status=status,
                       action=f"{request.method} {template(route.path)}" + (f" ({capability})" if capability else ""),
                       sensitive=request.get(AUDIT_FIELDS), notes=request.get(AUDIT_NOTES))


async def _authorised(request: web.Request, handler: Handler, route: Route, who: Principal,
                      category: str) -> web.StreamResponse:
    st = state(request)
    st.gates.check_open(request.path)
    tenant_id = await st.tenancy.resolve(request, who)
    quotas = await st.tenancy.quotas(tenant_id)
    ctx = context(request).model_copy(update={
        "tenant_id": tenant_id, "identity_id": who.identity_id, "scopes": tuple(sorted(who.scopes)),
        "quotas": quotas})
    request[CONTEXT] = ctx
    ctx.bind()
    if route.scope and route.scope not in who.scopes:
        raise InsufficientScope(
            f"this call needs the '{route.scope}' scope", details={"required_scope": route.scope}
        )
    if route.platform and not ("admin" in who.scopes and await st.tenancy.is_root(who.tenant_id)):
        raise Forbidden("platform-wide operations are for the root tenant's admins")
    if route.target is not None:
        resource, capability = route.target(request)
        await st.authorizer.authorize(request, who, resource, capability)
    request[ALLOWANCE] = st.limiter.take(category, f"idn:{who.identity_id}")
    st.minute_quota.take(tenant_id, ctx.quota("requests_per_minute"))
    return await handler(request)


async def record_audit(request: web.Request, *, tenant_id: str, identity_id: str | None, action: str,
                       resource: str, outcome: str, status: int, sensitive: dict[str, str] | None = None,
                       notes: dict[str, str] | None = None) -> None:
    """Write one audit entry for this request (naming the door it came in by); if that fails the request fails
    too (``storage_error``)."""
    st = state(request)
    try:
        await st.audit.record(
            tenant_id=tenant_id, identity_id=identity_id, action=action, resource=resource, outcome=outcome,
            status=status, client_ip=str(st.clients.of(request) or "") or None,
            request_id=context(request).request_id, sensitive=sensitive, notes=notes,
            listener=listener_of(request).name)
    except Exception as exc:  # noqa: BLE001 - no audit entry, no answer
        log.error("audit_write_failed", error=type(exc).__name__)
        raise storage_error(exc, "the audit log's") from None
