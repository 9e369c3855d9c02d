"""Authorisation inside forwarding handlers, for what a route's URL alone does not say.

- ``authorize``: the request's own target, named by its body (the audit entry names it);
- ``also``: a second resource the request acts through, allowed too;
- ``listed``: a page answered with the items the caller may ``list``;
- ``fetched``: a record authorised once fetched, through any of the resources it belongs to; who
  may not even ``read`` one is answered ``hidden`` (not found), as for an id of another tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.gateway.edge.routes import model_response, principal
from services.gateway.state import state
from shared.contracts.pki import Page
from shared.errors import CofferError


async def authorize(request: web.Request, resource: str, capability: str) -> None:
    await state(request).authorizer.authorize(request, principal(request), resource, capability)


async def also(request: web.Request, resource: str, capability: str) -> None:
    await state(request).authorizer.authorize_also(request, principal(request), resource, capability)


async def listed(request: web.Request, page: Page[Any], resource_of: Callable[[Any], str]) -> web.Response:
    items = await state(request).authorizer.listable(request, principal(request), page.items, resource_of)
    return model_response(page.model_copy(update={"items": items}))


async def listed_through(request: web.Request, page: Page[Any],
                         resources_of: Callable[[Any], tuple[str, ...]]) -> web.Response:
    """A page answered with the items the caller may ``list`` through any of their resources."""
    st, who = state(request), principal(request)
    items = []
    for item in page.items:
        for resource in resources_of(item):
            if await st.authorizer.may(request, who, resource, "list"):
                items.append(item)
                break
    return model_response(page.model_copy(update={"items": items}))


async def fetched(request: web.Request, resources: tuple[str, ...], capability: str, hidden: CofferError) -> None:
    """Allow ``capability`` on any of ``resources`` (the first that allows is the audit's target);
    who may not ``read`` any of them is answered ``hidden`` (not found)."""
    st, who = state(request), principal(request)
    for resource in resources:
        if await st.authorizer.may(request, who, resource, capability):
            await st.authorizer.authorize(request, who, resource, capability)
            return
    if capability != "read" and any([await st.authorizer.may(request, who, r, "read") for r in resources]):
        await st.authorizer.authorize(request, who, resources[0], capability)  # raises, naming the reason
    raise hidden
