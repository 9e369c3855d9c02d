"""Message contracts: frozen pydantic models, one module per service, and the typed RPC between them.

Within a version only optional fields are added; anything else is a new
model beside the old one.

Each RPC method is declared once, as a ``Method`` (service, name, request
model, result model) in its service's contract module. Callers use that
service's typed client (``SecretsClient(bus).get(ctx, SecretRef(...)) ->
SecretView``); a service marks its handler with ``@handles(METHOD)`` and gets
the parsed request model, returning the result model. Nobody builds, indexes
or parses a raw dict for the bus.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar

import orjson
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr
from pydantic import ValidationError as _PydanticError

from shared.errors import InternalError, ValidationError, from_wire

if TYPE_CHECKING:
    from shared.context import RequestContext

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Req = TypeVar("Req", bound=BaseModel)
Res = TypeVar("Res", bound=BaseModel)


class Contract(BaseModel):
    """The base of every message and request body: frozen, and no field it doesn't name."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Query(BaseModel):
    """The base of query-string models: unknown parameters are ignored, as HTTP clients expect."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Empty(Contract):
    """A request or result with nothing in it."""


#: a duration as the description shows it (``90s``, ``1h30m``, ``30d``); the field stays a string so the
#: service's own check answers ``invalid_duration`` (not a generic ``validation_error``)
DURATION_SCHEMA: dict[str, Any] = {"pattern": r"^([0-9]{1,12}[smhdw]){1,5}$"}


def _integral(value: object) -> object:
    """JSON Schema's ``integer`` takes ``2.0``: so does a request (as 2), but never ``true`` or ``2.5``."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: an integer field of a request, as JSON Schema reads ``integer``
JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]

#: C0 controls (CR, LF, NUL, TAB …), DEL and C1 controls (NEL among them), and the Unicode line and paragraph
#: separators: what can end a header line or split a URL, in one reader or another
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: the same, as the description shows it (JSON Schema's ECMA-262 regex)
HEADER_SAFE_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"
_CONTROLS_MESSAGE = "control characters (CR, LF, NUL, TAB …) are not allowed here"


def _header_safe(value: str) -> str:
    if _CONTROLS.search(value):
        raise ValueError(_CONTROLS_MESSAGE)
    return value


#: PEM blocks (a ``ca_certificate``, a bundle): line breaks between base64 lines, nothing else. No line of one
#: holds a ``:``, so even in a header it could add no field; the character classes don't overlap (linear)
_PEM = re.compile(r"(?:[ \t\r\n]*-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n[A-Za-z0-9+/=\r\n]+-----END \1-----)+"
                  r"[ \t\r\n]*")


def _header_safe_deep(value: Any) -> Any:
    """Every string in a config value (in lists and objects too, keys included) is header-safe, but for PEM
    blocks (certificates); walked without recursion, however deeply the JSON nests."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not _PEM.fullmatch(item):
                _header_safe(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return value


#: a config string that may reach an HTTP header, a URL or a connection string (a backend's ``tenant_id`` is
#: sent as ``X-Tenant-ID``, a URL is requested, a user name is put in ``Authorization``): no control characters,
#: so nothing a tenant stores can split a header or a request line. Refused with 422 ``validation_error`` naming
#: the field, before anything is stored or connected to.
HeaderSafeStr = Annotated[StrictStr, AfterValidator(_header_safe),
                          Field(json_schema_extra={"pattern": HEADER_SAFE_PATTERN})]
#: a value of a free-form ``config`` object (engines, federation backends, DNS providers): any JSON, each
#: string in it header-safe
HeaderSafeValue = Annotated[Any, AfterValidator(_header_safe_deep)]


class PageRequest(Contract):
    """``limit`` and ``cursor`` of every list method."""

    limit: JsonInt = Field(100, ge=1, le=1000)
    cursor: StrictStr | None = Field(None, max_length=2000)


class Page(Contract, Generic[T]):
    """One page of a list, and where the next one starts (``None``: this was the last)."""

    items: list[T]
    next_cursor: str | None


def field_errors(exc: _PydanticError) -> list[dict[str, str]]:
    """pydantic's errors as ``details.fields`` (never echoing the input values)."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


@functools.cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    # pydantic's class-level ``model_fields`` costs ~0.6 µs a call: it was a fifth of a list's time
    return tuple(model.model_fields)


_MISSING = object()


def from_row(model: type[M], row: Mapping[str, Any], **extra: Any) -> M:
    """``model`` from a database row (the model's fields the row has; the others keep defaults), plus ``extra``."""
    data = {name: value for name in _field_names(model) if (value := row.get(name, _MISSING)) is not _MISSING}
    data.update(extra)
    return model.model_validate(data)


@functools.cache
def _reply_type(result: type[BaseModel]) -> type[Reply[Any]]:
    """``Reply[result]``, made once (pydantic's generic-class lookup costs a few µs a call)."""
    return Reply[result]  # type: ignore[valid-type]


def parse(model: type[M], data: Any) -> M:
    """``model`` from ``data``, or ``validation_error`` with ``details.fields``."""
    try:
        return model.model_validate(data)
    except _PydanticError as exc:
        raise ValidationError("request validation failed", details={"fields": field_errors(exc)}) from None


@dataclass(frozen=True)
class Method(Generic[Req, Res]):
    """One RPC method: ``<service>.<name>``, what it takes and what it answers (``Empty``: nothing)."""

    service: str
    name: str
    request: type[Req]
    result: type[Res]


class Caller(Protocol):
    """What a client needs of the bus."""

    async def call_raw(self, service: str, method: str, payload: Mapping[str, Any] | bytes, ctx: RequestContext,
                       *, timeout: float | None = None) -> bytes: ...


class Reply(BaseModel, Generic[T]):
    """An RPC reply as it travels: ``{"ok": true, "result": …}`` or ``{"ok": false, "error": {code, …}}``."""

    ok: bool
    result: T | None = None
    error: Any = None


class ServiceClient:
    """The base of the typed clients: one method per RPC method, models in, models out.

    A reply is validated from its bytes in one pass (pydantic's JSON parser
    and validator together), not decoded to dicts and validated again.
    """

    def __init__(self, bus: Caller) -> None:
        self.bus = bus

    async def _call(self, method: Method[Req, Res], ctx: RequestContext, request: Req, *,
                    timeout: float | None = None) -> Res:
        payload = request.__pydantic_serializer__.to_json(request)  # the request's JSON, in one pass
        body = await self.bus.call_raw(method.service, method.name, payload, ctx, timeout=timeout)
        try:
            reply = _reply_type(method.result).model_validate_json(body)
        except _PydanticError:
            raise InternalError(f"malformed reply from {method.service}.{method.name}") from None
        if not reply.ok:
            raise from_wire(reply.error)
        if reply.result is None:
            return method.result()  # Empty: the method answers nothing
        result: Res = reply.result
        return result


Handler = Callable[[Any, Any, "RequestContext"], Awaitable[Any]]
RpcFunction = Callable[[dict[str, Any], "RequestContext"], Awaitable[Any]]


def handles(method: Method[Any, Any]) -> Callable[[Handler], Handler]:
    """Mark a service's handler method as the one answering ``method`` (see ``rpc_table``)."""
    def mark(fn: Handler) -> Handler:
        fn.__rpc_method__ = method  # type: ignore[attr-defined]
        return fn
    return mark


def rpc_table(handlers: object) -> dict[str, RpcFunction]:
    """The bus handlers of every ``@handles`` method of ``handlers``: request parsed, result dumped."""
    table: dict[str, RpcFunction] = {}
    for attr in dir(type(handlers)):
        method = getattr(getattr(type(handlers), attr), "__rpc_method__", None)
        if isinstance(method, Method):
            table[method.name] = _adapter(method, getattr(handlers, attr))
    return table


def _adapter(method: Method[Any, Any], fn: Callable[[Any, RequestContext], Awaitable[Any]]) -> RpcFunction:
    async def handler(payload: dict[str, Any], ctx: RequestContext) -> Any:
        result = await fn(parse(method.request, payload), ctx)
        if method.result is Empty:
            return None
        # a handler's own result model is used as it is (validating it again would copy it for nothing)
        model = result if type(result) is method.result else method.result.model_validate(result)
        # the result's JSON, made by pydantic's serializer and put in the reply as it is
        return orjson.Fragment(model.__pydantic_serializer__.to_json(model))
    handler.__name__ = f"{method.service}.{method.name}"
    return handler
