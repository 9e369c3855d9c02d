"""Operator routes: maintenance mode and the audit log (api.md §2)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictStr

from services.gateway.audit import view
from services.gateway.handlers import REPO
from services.gateway.http import AUDIT, AUDIT_FIELDS, GUARD, Route, context, json_response, principal, read_model
from services.gateway.iam_routes import CURSORS
from shared.contracts import parse


class MaintenanceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool
    message: StrictStr | None = Field(None, max_length=500)


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    identity_id: str | None = Field(None, max_length=64)
    path_prefix: str | None = Field(None, max_length=600)
    code: str | None = Field(None, max_length=64)
    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


class AuditMatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    value: StrictStr = Field(min_length=1, max_length=65536, repr=False)


async def get_maintenance(request: web.Request) -> web.Response:
    return json_response(request.app[GUARD].maintenance)


async def put_maintenance(request: web.Request) -> web.Response:
    """Root admins only: while on, every call but ``/v1/sys/*`` is 503 ``maintenance_mode``."""
    body = await read_model(request, MaintenanceBody)
    state = {"enabled": body.enabled, "message": body.message}
    await request.app[REPO].set_maintenance(body.enabled, body.message, request.app[SCHEMA],
                                            context(request).request_id)
    request.app[GUARD].maintenance = state  # here at once; other replicas on the event
    return json_response(state)


def _tenant(request: web.Request) -> str:
    tenant = context(request).tenant_id
    assert tenant is not None
    return tenant


async def audit_events(request: web.Request) -> web.Response:
    query = parse(AuditQuery, dict(request.query))
    return await _events(request, query, None)


async def audit_match(request: web.Request) -> web.Response:
    """Entries whose sensitive fields hold ``value`` ("was this value used?"), compared as HMACs.

    Only entries whose resource the caller may ``read`` match (else the answer
    would tell whether a guessed value is the one stored at a path the caller
    can't read), and the call is rate-limited like authentication.
    """
    body = await read_model(request, AuditMatch)
    query = parse(AuditQuery, dict(request.query))
    request[AUDIT_FIELDS] = {"value": body.value}
    return await _events(request, query, request.app[AUDIT].field_mac(_tenant(request), body.value), readable=True)


async def _events(request: web.Request, query: AuditQuery, mac: str | None, *, readable: bool = False
                  ) -> web.Response:
    tenant = _tenant(request)
    shape = {"kind": "audit", **query.model_dump(mode="json", exclude={"cursor"})}

    async def fetch(after: int | None, n: int) -> Any:
        return await request.app[AUDIT].events(
            tenant, identity_id=query.identity_id, path_prefix=query.path_prefix, code=query.code,
            since=query.since, until=query.until, after=after, limit=n, field_mac=mac)

    rows, cursor = await request.app[CURSORS].page(tenant, shape, query.cursor, query.limit, fetch,
                                                   lambda last: last["seq"])
    if readable:
        guard, who = request.app[GUARD], principal(request)
        rows = [r for r in rows if await guard.may(request, who, r["resource"], "read")]
    return json_response({"items": [view(r) for r in rows], "next_cursor": cursor})


async def audit_verify(request: web.Request) -> web.Response:
    return json_response(await request.app[AUDIT].verify(_tenant(request)))


SCHEMA = web.AppKey("gateway_schema", str)

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/sys/maintenance", get_maintenance, scope="admin", platform=True, errors=("forbidden",),
          target=lambda r: ("sys/maintenance", "read")),
    Route("PUT", "/v1/sys/maintenance", put_maintenance, scope="admin", platform=True,
          target=lambda r: ("sys/maintenance", "manage"), body=MaintenanceBody, errors=("forbidden",)),
    Route("GET", "/v1/audit/events", audit_events, scope="admin", target=lambda r: ("sys/audit", "read"),
          query=AuditQuery, errors=("validation_error", "invalid_cursor")),
    Route("POST", "/v1/audit/events:match", audit_match, scope="admin", target=lambda r: ("sys/audit", "read"),
          body=AuditMatch, query=AuditQuery, errors=("invalid_cursor",), category="auth"),
    Route("GET", "/v1/audit/verify", audit_verify, scope="admin", target=lambda r: ("sys/audit", "read")),
)
