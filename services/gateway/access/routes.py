"""``/v1/access-requests`` (api.md §14): ask for a requestable policy; others approve; it ends by itself.

Who sees a request: its requester, and whoever a policy allows ``approve`` (or ``read``; in lists ``list``)
on ``policies/<its policy>``; anyone else gets 404 ``binding_not_found``, as for an id of another tenant.
Who decides: a token with the ``admin`` scope (asking, reading and cancelling need none), a policy
allowing ``approve`` on ``policies/<name>``, the decider must be one of the
policy's ``approvers`` when it names some (an identity id, or ``policy:<name>``: a standing binding to
that policy in the request's tenant), and is never the requester. A partner admin acting in a child tenant
(``X-Tenant-ID``) decides there only if its policies allow ``approve`` on the child's policy (and the
policy's ``approvers``, when set, name its id). Requests are made in the requester's own tenant.
Each call's audit entry names ``access-requests/<id>`` and the action (``… (deny)``), and keeps the policy
and the comment (or reason) in ``fields.notes``.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from services.gateway.access.models import AccessDecision, AccessQuery, AccessRequestCreate, access_view
from services.gateway.edge.routes import (
    AUDIT_NOTES,
    AUDIT_TARGET,
    Route,
    context,
    json_response,
    principal,
    query,
    read_model,
    tenant_of,
)
from services.gateway.state import state
from shared.durations import parse_duration
from shared.errors import BindingNotFound, Forbidden, InsufficientScope, PolicyNotFound, TtlExceedsMax

_ID = re.compile(r"^acr_[0-9a-f]{1,60}$")


def _request_id(request: web.Request) -> str:
    """The id in the URL; anything that can't be one (too long, NUL, unicode…) is simply not found."""
    raw = request.match_info["id"]
    if not _ID.match(raw):
        raise BindingNotFound("no such access request", details={"id": raw[:64]})
    return raw


def _noted(request: web.Request, resource: str, capability: str, **notes: str | None) -> None:
    request[AUDIT_TARGET] = (resource, capability)
    request[AUDIT_NOTES] = {k: v for k, v in notes.items() if v is not None}


async def _visible(request: web.Request, row: Any, capability: str = "read") -> bool:
    who = principal(request)
    if who.identity_id == row["requester_id"]:
        return True
    authorizer, resource = state(request).authorizer, f"policies/{row['policy']}"
    return await authorizer.may(request, who, resource, "approve") or \
        await authorizer.may(request, who, resource, capability)


async def _fetched(request: web.Request) -> Any:
    """The request of the URL, if the caller may see it (else 404, as if it did not exist)."""
    request_id = _request_id(request)
    row = await state(request).access.get(tenant_of(request), request_id)
    if not await _visible(request, row):
        raise BindingNotFound("no such access request", details={"id": request_id})
    return row


async def _may_decide(request: web.Request, row: Any, *, own: str) -> None:
    """May the caller approve, deny or revoke ``row``? Else the reason (``own``: what the requester does
    instead)."""
    st, who, tenant = state(request), principal(request), tenant_of(request)
    if who.identity_id == row["requester_id"]:
        raise Forbidden(f"nobody decides on their own access request{own}", details={"rule": "self_approval"})
    await st.authorizer.authorize_also(request, who, f"policies/{row['policy']}", "approve")
    try:
        policy = await st.policies.policy(tenant, row["policy"])
    except PolicyNotFound:
        policy = None
    if policy is None or policy["id"] != row["policy_id"] or policy["request"] is None:
        raise Forbidden("the policy is gone or no longer requestable", details={"rule": "not_requestable"})
    approvers = policy["request"].get("approvers")
    if approvers and who.identity_id not in approvers and not await st.access.holds_policy(
            tenant, [a.removeprefix("policy:") for a in approvers if a.startswith("policy:")], who.identity_id):
        raise Forbidden("the policy names its approvers, and you are not one of them",
                        details={"rule": "approvers"})


async def create_request(request: web.Request) -> web.Response:
    body = await read_model(request, AccessRequestCreate)
    st, who, tenant = state(request), principal(request), tenant_of(request)
    _noted(request, "access-requests", "", policy=body.policy, reason=body.reason)
    if who.tenant_id != tenant:
        raise Forbidden("access is asked for in your own tenant", details={"rule": "own_tenant"})
    seconds = parse_duration(body.duration, field="duration")
    try:
        policy = await st.policies.policy(tenant, body.policy)
    except PolicyNotFound:
        policy = None
    if policy is None or policy["request"] is None:  # the same answer whether it exists or not
        raise Forbidden("no requestable policy has this name", details={"rule": "not_requestable"})
    limit = policy["request"]["max_duration"]
    if seconds > parse_duration(limit, field="max_duration"):
        raise TtlExceedsMax(f"the policy is granted for at most {limit}", details={"max_duration": limit})
    row = await st.access.create(tenant, policy, who.identity_id, body.duration, seconds, body.reason,
                                 st.settings.access_request_ttl_seconds, context(request).request_id)
    request[AUDIT_TARGET] = (f"access-requests/{row['id']}", "")
    return json_response(access_view(row), status=201)


async def get_request(request: web.Request) -> web.Response:
    row = await _fetched(request)
    request[AUDIT_TARGET] = (f"access-requests/{row['id']}", "read")
    return json_response(access_view(row))


async def list_requests(request: web.Request) -> web.Response:
    """The tenant's requests the caller may see (its own; those of policies it may approve or list)."""
    st, tenant, params = state(request), tenant_of(request), query(request, AccessQuery)
    shape = {"kind": "access-requests", **params.model_dump(mode="json", exclude={"cursor"})}

    async def fetch(after: str | None, limit: int) -> Any:
        return await st.access.list_requests(tenant, params.status, params.requester, params.policy, after, limit)

    async def visible(rows: Any) -> list[Any]:
        return [row for row in rows if await _visible(request, row, "list")]

    # kept before the page is cut: a filter (requester, policy, status) over requests the caller can't see
    # answers an empty page either way, never a cursor that says some exist
    seen, cursor = await st.cursors.visible_page(tenant, shape, params.cursor, params.limit, fetch,
                                                 lambda r: r["id"], visible, chunk=250, window=1000)
    request[AUDIT_TARGET] = ("access-requests", "list")
    return json_response({"items": [access_view(r) for r in seen], "next_cursor": cursor})


async def decide(request: web.Request) -> web.Response:
    """``:approve``, ``:deny``, ``:cancel`` (the requester) or ``:revoke`` (a grant, by an approver)."""
    action = request.match_info["action"]
    body = await read_model(request, AccessDecision)
    row = await _fetched(request)
    st, who, tenant, trace = state(request), principal(request), tenant_of(request), context(request).request_id
    _noted(request, f"access-requests/{row['id']}", action, policy=row["policy"], comment=body.comment)
    if action == "cancel":
        if who.identity_id != row["requester_id"]:
            raise Forbidden("only the requester cancels a request (an approver revokes a grant)",
                            details={"rule": "requester_only"})
        done = await st.access.end(tenant, row["id"], "cancelled", who.identity_id, body.comment, trace)
    else:
        if "admin" not in who.scopes:  # a token narrowed to, say, secrets:read decides nothing
            raise InsufficientScope("deciding on access requests needs the 'admin' scope",
                                    details={"required_scope": "admin"})
        await _may_decide(request, row, own=": cancel it instead" if action == "revoke" else "")
        if action == "approve":
            done = await st.access.approve(tenant, row["id"], who.identity_id, body.comment, trace)
        elif action == "deny":
            done = await st.access.deny(tenant, row["id"], who.identity_id, body.comment, trace)
        else:
            done = await st.access.end(tenant, row["id"], "revoked", who.identity_id, body.comment, trace)
    if done["status"] != row["status"]:
        st.authorizer.rules.forget(row["requester_id"])  # here at once; other replicas on policy.updated
    return json_response(access_view(done))


_ERRORS = ("binding_not_found",)
ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/access-requests", create_request, body=AccessRequestCreate, statuses=(201,),
          errors=("forbidden", "ttl_exceeds_max", "invalid_duration", "version_conflict")),
    Route("GET", "/v1/access-requests", list_requests, query=AccessQuery, errors=("invalid_cursor",)),
    Route("GET", "/v1/access-requests/{id}", get_request, errors=_ERRORS),
    Route("POST", "/v1/access-requests/{id}:{action:(approve|deny|cancel|revoke)}", decide, body=AccessDecision,
          doc_paths=tuple(f"/v1/access-requests/{{id}}:{a}" for a in ("approve", "deny", "cancel", "revoke")),
          errors=(*_ERRORS, "forbidden", "version_conflict")),
)
