"""Audit routes (api.md §2): the tenant's hash-chained log, "was this value used?", and the chain's walk."""

from __future__ import annotations

import re
from typing import Annotated, Any

from aiohttp import web
from pydantic import AwareDatetime, BeforeValidator, Field, StrictStr

from services.gateway.audit.log import view
from services.gateway.edge.routes import (
    AUDIT_FIELDS,
    Route,
    json_response,
    principal,
    query,
    read_model,
    tenant_of,
)
from services.gateway.state import state
from shared.contracts import Contract, Query


def _iso_only(value: object) -> object:
    """ISO 8601 only: pydantic would also read ``0.5`` as seconds since the epoch, which the
    description (``format: date-time``) does not allow."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]", value):
        raise ValueError("an ISO 8601 date-time, like 2026-01-31T12:00:00Z")
    return value


#: a moment in a query: ISO 8601 with a zone
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]


class AuditQuery(Query):
    identity_id: str | None = Field(None, max_length=64)
    path_prefix: str | None = Field(None, max_length=600)
    code: str | None = Field(None, max_length=64)
    since: IsoTime | None = None
    until: IsoTime | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class AuditMatch(Contract):
    value: StrictStr = Field(min_length=1, max_length=65536, repr=False)


async def audit_events(request: web.Request) -> web.Response:
    return await _events(request, query(request, AuditQuery))


async def audit_match(request: web.Request) -> web.Response:
    """Entries whose sensitive fields hold ``value`` ("was this value used?"), compared as HMACs.

    Only entries whose resource the caller may ``read`` match (else the answer
    would tell whether a guessed value is the one stored at a path the caller
    can't read), and the call is rate-limited like authentication.
    """
    body = await read_model(request, AuditMatch)
    request[AUDIT_FIELDS] = {"value": body.value}
    mac = state(request).audit.field_mac(tenant_of(request), body.value)
    return await _match(request, query(request, AuditQuery), mac)


#: entries of the tenant's log one ``:match`` call looks through at most, matching or not: a call's work is
#: bounded, and a page that is not full when they are used up ends with a cursor after the last of them
MATCH_SCAN = 10_000
MATCH_CHUNK = 1000


async def _match(request: web.Request, params: AuditQuery, mac: str) -> web.Response:
    """One page of the entries that hold the value *and* that the caller may read: filtered before the page
    is cut, so neither the items nor ``next_cursor`` tell a match the caller can't read from no match.

    A call looks through a window of the next ``MATCH_SCAN`` entries of the log (fixed by the log's order
    alone, not by what matches). ``next_cursor`` resumes either after the page's last item, when more readable
    matches than ``limit`` were found in the window (the caller may see those), or after the window's last
    entry, when the window is used up and the log goes on; else it is null. Either way it is a function of the
    readable matches and of the log's length and order only: the same for a right and a wrong guess at a
    value the caller can't read.
    """
    st, tenant, who = state(request), tenant_of(request), principal(request)
    shape = {"kind": "audit-match", **params.model_dump(mode="json", exclude={"cursor"})}
    after = st.cursors.decode(params.cursor, tenant, shape) if params.cursor else None
    end, more = await st.audit.window(tenant, after, MATCH_SCAN)
    found: list[Any] = []
    # matches are fetched in large chunks: a guess at a hidden value costs the same round trips as a wrong one,
    # unless it matches more than a chunk of entries
    position, chunk = after, max(params.limit + 1, MATCH_CHUNK)
    while len(found) <= params.limit:
        rows = await st.audit.events(
            tenant, identity_id=params.identity_id, path_prefix=params.path_prefix, code=params.code,
            since=params.since, until=params.until, after=position, limit=chunk, field_mac=mac, through=end)
        found += await st.authorizer.listable_as(request, who, rows, lambda r: r["resource"], "read")
        if len(rows) < chunk:
            break  # the window holds no more matches
        position = rows[-1]["seq"]
    if len(found) > params.limit:
        found, resume = found[:params.limit], found[params.limit - 1]["seq"]
    else:
        resume = end if more else None
    cursor = st.cursors.encode(tenant, shape, resume) if resume is not None else None
    return json_response({"items": [view(r) for r in found], "next_cursor": cursor})


async def _events(request: web.Request, params: AuditQuery) -> web.Response:
    st, tenant = state(request), tenant_of(request)
    shape = {"kind": "audit", **params.model_dump(mode="json", exclude={"cursor"})}

    async def fetch(after: int | None, n: int) -> Any:
        return await st.audit.events(
            tenant, identity_id=params.identity_id, path_prefix=params.path_prefix, code=params.code,
            since=params.since, until=params.until, after=after, limit=n)

    rows, cursor = await st.cursors.page(tenant, shape, params.cursor, params.limit, fetch, lambda last: last["seq"])
    return json_response({"items": [view(r) for r in rows], "next_cursor": cursor})


async def audit_verify(request: web.Request) -> web.Response:
    return json_response(await state(request).audit.verify(tenant_of(request)))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/audit/events", audit_events, scope="admin", target=lambda r: ("sys/audit", "read"),
          query=AuditQuery, errors=("validation_error", "invalid_cursor")),
    Route("POST", "/v1/audit/events:match", audit_match, scope="admin", target=lambda r: ("sys/audit", "read"),
          body=AuditMatch, query=AuditQuery, errors=("invalid_cursor",), category="auth"),
    Route("GET", "/v1/audit/verify", audit_verify, scope="admin", target=lambda r: ("sys/audit", "read")),
)
