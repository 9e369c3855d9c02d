"""The identity API's routes (api.md §3–4): identities, tenants, policies and bindings, tokens.

The gateway owns these: no bus hop, its own repositories directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.gateway.edge.routes import PageQuery, json_response, principal, query, tenant_of
from services.gateway.state import state


async def authorize(request: web.Request, resource: str, capability: str) -> None:
    """``access_denied`` (or the failed condition) unless the caller's policy allows it."""
    await state(request).authorizer.authorize(request, principal(request), resource, capability)


async def caller_is_partner_admin(request: web.Request) -> bool:
    me = await state(request).identities.identity_any_tenant(principal(request).identity_id)
    return me is not None and bool(me["partner_admin"])


async def listed(request: web.Request, kind: str, fetch: Callable[[str | None, int], Any],
                 key: Callable[[Any], str], view: Callable[[Any], dict[str, Any]],
                 resource_of: Callable[[Any], str]) -> web.Response:
    """A page of a list, keeping only what the caller may ``list`` (``resource_of(row)``): kept before the page
    is cut, so ``next_cursor`` says nothing of rows the caller can't list (``CursorCodec.visible_page``)."""
    st, page, who = state(request), query(request, PageQuery), principal(request)

    async def keep(rows: Any) -> list[Any]:
        return await st.authorizer.listable(request, who, rows, resource_of)

    rows, next_cursor = await st.cursors.visible_page(
        tenant_of(request), {"kind": kind, "limit": page.limit}, page.cursor, page.limit, fetch, key, keep)
    return json_response({"items": [view(r) for r in rows], "next_cursor": next_cursor})
