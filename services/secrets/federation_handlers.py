"""RPC handlers of federation backends (api.md §5.4): create (checked by connecting), see, delete."""

from __future__ import annotations

from services.secrets.federation import Federation
from shared.context import RequestContext
from shared.contracts import Page, PageRequest, handles
from shared.contracts import federation as contract
from shared.contracts.federation import BackendCreate, BackendRef, BackendView
from shared.cursors import CursorCodec


class FederationHandlers:
    def __init__(self, federation: Federation, cursors: CursorCodec) -> None:
        self.federation = federation
        self.cursors = cursors

    @handles(contract.BACKEND_CREATE)
    async def create(self, req: BackendCreate, ctx: RequestContext) -> BackendView:
        return await self.federation.create(ctx.require_tenant(), req)

    @handles(contract.BACKEND_GET)
    async def get(self, req: BackendRef, ctx: RequestContext) -> BackendView:
        return await self.federation.get(ctx.require_tenant(), req.name)

    @handles(contract.BACKEND_LIST)
    async def list(self, req: PageRequest, ctx: RequestContext) -> Page[BackendView]:
        tenant = ctx.require_tenant()
        rows, cursor = await self.cursors.page(
            tenant, {"kind": "federation-backends", "limit": req.limit}, req.cursor, req.limit,
            lambda after, n: self.federation.list_backends(tenant, after, n), lambda last: last["name"])
        return Page[BackendView](items=[BackendView.model_validate(dict(r)) for r in rows], next_cursor=cursor)

    @handles(contract.BACKEND_DELETE)
    async def delete(self, req: BackendRef, ctx: RequestContext) -> None:
        await self.federation.delete(ctx.require_tenant(), req.name)
