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

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict
from pydantic import ValidationError as _PydanticError

from shared.errors import ValidationError

if TYPE_CHECKING:
    from shared.context import RequestContext

M = TypeVar("M", bound=BaseModel)
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


def field_errors(exc: _PydanticError) -> list[dict[str, str]]:
    """pydantic's errors as ``details.fields`` (never echoing the input values)."""
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def from_row(model: type[M], row: Mapping[str, Any], **extra: Any) -> M:
    """``model`` from a database row (the model's fields the row has; the others keep defaults), plus ``extra``."""
    columns = set(row.keys())
    return model(**{name: row[name] for name in model.model_fields if name in columns and name not in extra},
                 **extra)


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

    async def call(self, service: str, method: str, payload: Mapping[str, Any], ctx: RequestContext, *,
                   timeout: float | None = None) -> Any: ...


class ServiceClient:
    """The base of the typed clients: one method per RPC method, models in, models out."""

    def __init__(self, bus: Caller) -> None:
        self.bus = bus

    async def _call(self, method: Method[Req, Res], ctx: RequestContext, request: Req, *,
                    timeout: float | None = None) -> Res:
        raw = await self.bus.call(method.service, method.name, request.model_dump(mode="json"), ctx, timeout=timeout)
        return method.result.model_validate(raw if raw is not None else {})


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
        return None if method.result is Empty else method.result.model_validate(result).model_dump(mode="json")
    handler.__name__ = f"{method.service}.{method.name}"
    return handler
