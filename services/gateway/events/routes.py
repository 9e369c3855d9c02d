"""``GET /v1/events``: the caller's tenant's events as server-sent events (api.md §12); ``GET
/v1/asyncapi.json``: every event type, described.

Each event is ``id: <event id>``, ``event: <type>``, ``data: <the JSON a webhook receives>``. Before anything
is sent: the filters (``types``: AMQP-style patterns, ``path_pattern``: a glob, linear-time), the place to
resume from (``Last-Event-ID``: a kept event of the caller's tenant, else a first ``event: reset``), and the
identity's stream limit; then the audit entry, then the stream (``stream.Stream``).
"""

from __future__ import annotations

import re
import uuid

from aiohttp import web
from pydantic import Field, field_validator

from services.gateway.edge.middlewares import audit_request, stamp
from services.gateway.edge.routes import Route, json_response, principal, query, tenant_of
from services.gateway.state import state
from shared import asyncapi
from shared.contracts import Query
from shared.contracts.webhooks import EVENT_PATTERN
from shared.errors import InvalidRequest
from shared.globs import MAX_PATTERN, compile_glob

MAX_TYPES = 20
_TYPE = re.compile(EVENT_PATTERN)


class EventsQuery(Query):
    """``?types=secret.*,lease.*&path_pattern=app/**``"""

    types: str | None = Field(None, max_length=MAX_TYPES * 201, description=(
        "comma-separated event type patterns (`*` one word, `#` any words); absent: every type"))
    path_pattern: str | None = Field(None, max_length=MAX_PATTERN, description=(
        "a glob on `data.path` (`*`, `**`, `?`, classes); an event without a path does not match"))

    @field_validator("types")
    @classmethod
    def _patterns(cls, value: str | None) -> str | None:
        if value is None:
            return None
        patterns = [p.strip() for p in value.split(",")]
        if len(patterns) > MAX_TYPES:
            raise ValueError(f"at most {MAX_TYPES} patterns")
        if not all(len(p) <= 200 and _TYPE.fullmatch(p) for p in patterns):
            raise ValueError("each pattern is words of a-z, 0-9, _ between dots, or '*' / '#'")
        return ",".join(patterns)

    def patterns(self) -> tuple[str, ...]:
        return tuple(self.types.split(",")) if self.types else ("#",)


def last_event_id(request: web.Request) -> uuid.UUID | None:
    """The ``Last-Event-ID`` header: absent, or an event id (``invalid_request`` otherwise)."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None or not raw.strip():
        return None
    try:
        if len(raw) > 64:
            raise ValueError
        return uuid.UUID(raw.strip())
    except ValueError:
        raise InvalidRequest("Last-Event-ID is not an event id", details={"header": "Last-Event-ID"}) from None


async def stream_events(request: web.Request) -> web.StreamResponse:
    st = state(request)
    params = query(request, EventsQuery)
    if params.path_pattern is not None:
        compile_glob(params.path_pattern)  # invalid_glob before the stream starts
    tenant_id, who = tenant_of(request), principal(request)
    after: int | None = None
    resume = last_event_id(request)
    if resume is not None:
        after = await st.events.store.seq_of(tenant_id, resume)
    stream = await st.events.open(who, tenant_id, params.patterns(), params.path_pattern, st.clients.of(request))
    try:
        await audit_request(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                               "X-Accel-Buffering": "no"})
        response.force_close()  # however a stream ends, its connection ends with it
        if request.version >= (1, 1):
            response.enable_chunked_encoding()  # said, not left to aiohttp: the hub writes chunks itself
        stamp(request, response)
        await response.prepare(request)
        await stream.run(request, response, after, reset=resume is not None and after is None)
    finally:
        st.events.close_stream(stream)
    return response


_DESCRIBED: dict[str, dict[str, object]] = {}


async def asyncapi_json(request: web.Request) -> web.Response:
    """Every event type as AsyncAPI 3.0 (``shared.asyncapi``), made once per process."""
    version = str(state(request).openapi.get("info", {}).get("version", ""))
    if version not in _DESCRIBED:
        _DESCRIBED[version] = asyncapi.document(version)
    return json_response(_DESCRIBED[version])


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/events", stream_events, scope="events", query=EventsQuery, media="text/event-stream",
          errors=("invalid_glob", "rate_limited", "service_unavailable")),
    Route("GET", "/v1/asyncapi.json", asyncapi_json, public=True),
)
