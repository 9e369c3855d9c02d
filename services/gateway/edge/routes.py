"""The route table's entries, the per-request keys, and reading and writing JSON bodies.

Every room of the gateway (iam, audit, system, forward) declares a tuple of
``Route``s; ``bootstrap`` puts them in one table, which the middlewares
(authentication, scope, policy, limits, audit) and the OpenAPI description
read.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from pydantic import BaseModel, Field

from services.gateway.iam.domain import Principal
from shared.context import RequestContext
from shared.contracts import Query, parse
from shared.contracts.times import answer_json
from shared.errors import CofferError, InvalidRequest, ValidationError, envelope

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Route:
    """One endpoint.

    ``public`` ones need no token; ``scope`` is what a token must hold;
    ``target`` gives the (resource path, capability) a policy must allow, when
    the URL alone says (handlers whose resource is in the body, and lists,
    call the authorizer themselves).
    """

    method: str
    path: str
    handler: Handler
    public: bool = False
    scope: str | None = None
    target: Callable[[web.Request], tuple[str, str]] | None = None
    #: platform-wide (acts on every tenant): root admins only, whatever policies say
    platform: bool = False
    #: the rate-limit category, when not the method's (``read`` / ``write``)
    category: str | None = None
    # -- for the OpenAPI description (edge/openapi.py) --
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    #: success status, and the codes this route can answer beyond the common ones
    statuses: tuple[int, ...] = (200,)
    errors: tuple[str, ...] = ()
    #: documented paths when one route serves several (``{path}:restore`` ...)
    doc_paths: tuple[str, ...] = ()
    #: the body of a documented path, where it is not ``body`` (``…:sign`` beside ``…:issue``)
    doc_bodies: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    #: the success answer's media type
    media: str = "application/json"
    #: JSON Schemas of path parameters beyond the defaults of edge/openapi.py (by name)
    params: Mapping[str, dict[str, Any]] = field(default_factory=dict)


def at(kind: str, key: str, capability: str) -> Callable[[web.Request], tuple[str, str]]:
    """A route target: ``<kind>/<the path parameter key>`` and ``capability``."""
    return lambda request: (f"{kind}/{request.match_info[key]}", capability)


class PageQuery(Query):
    """``?limit=&cursor=`` of every list."""

    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=2000)


# -- what a request carries through the middlewares --------------------------------------

CONTEXT = web.RequestKey("ctx", RequestContext)
PRINCIPAL = web.RequestKey("principal", Principal)
#: sensitive request fields a handler wants in the audit entry (stored as HMACs only)
AUDIT_FIELDS = web.RequestKey("audit_fields", dict)
#: plain, non-secret notes for the audit entry (``fields.notes``): an access decision's comment
AUDIT_NOTES = web.RequestKey("audit_notes", dict)
#: (resource, capability) the request was authorised for: what the audit entry names
AUDIT_TARGET = web.RequestKey("audit_target", tuple)
#: the request's audit entry is written (a stream writes it as it starts)
AUDITED = web.RequestKey("audited", bool)


def context(request: web.Request) -> RequestContext:
    """The bus context of this request (request id + caller + tenant)."""
    return request[CONTEXT]


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def tenant_of(request: web.Request) -> str:
    """The tenant the (authenticated) request acts in."""
    return context(request).require_tenant()


# -- answers -------------------------------------------------------------------------------

def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """``data`` as the JSON answer; its datetimes written RFC 3339 UTC with ``Z`` (shared/contracts/times.py),
    so views hand it datetimes, not strings of their own."""
    return web.Response(
        body=answer_json(data), status=status, content_type="application/json", headers=headers
    )


def model_response(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A contract model as the JSON answer (its JSON made by pydantic's serializer, in one pass)."""
    return web.Response(body=model.__pydantic_serializer__.to_json(model), status=status,
                        content_type="application/json", headers=headers)


def error_response(error: CofferError, request_id: str) -> web.Response:
    return json_response(envelope(error, request_id), status=error.status, headers=error.headers)


# -- bodies --------------------------------------------------------------------------------

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
    _refuse_nul(data, "body")
    return data


def _refuse_nul(value: Any, where: str) -> None:
    """No NUL character anywhere in a request's strings (keys included): PostgreSQL's text and jsonb hold
    none, and a value that can't be stored is the caller's mistake (422), not a storage failure (500).
    A walk with its own stack: a body nested a thousand levels deep (orjson takes 1,024) can't exhaust
    Python's recursion limit."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        item, place = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValidationError.on(place[:200], "NUL characters are not allowed")
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((key, place))
                stack.append((child, f"{place}.{key}" if place != "body" else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{place}.{index}") for index, child in enumerate(item))


def query(request: web.Request, model: type[M]) -> M:
    """The query string as ``model`` (``validation_error`` when a parameter is wrong)."""
    if not request.query_string:
        return cast(M, _defaults(model))  # most requests have none: nothing to validate
    params = dict(request.query)
    _refuse_nul(params, "query")
    return parse(model, params)


@functools.cache
def _defaults(model: type[M]) -> M:
    return model()
