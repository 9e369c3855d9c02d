"""RPC handlers of the ACME client: a contract model in, the work done in the request's tenant, a model out."""

from __future__ import annotations

from typing import Any

from services.pki import keys
from services.pki.acme.service import Acme
from services.pki.acme.store import AcmeStore, Row, order_aad, sealed_of
from shared.context import RequestContext
from shared.contracts import PageRequest, from_row, handles
from shared.contracts import acme as contract
from shared.contracts.acme import (
    AccountCreate,
    AccountView,
    OrderCreate,
    OrderKey,
    OrderList,
    OrderView,
    Page,
    ProviderCreate,
    ProviderView,
    Ref,
)
from shared.crypto import unseal
from shared.cursors import CursorCodec
from shared.errors import AcmeOrderFailed, AcmeOrderNotFound
from shared.jobs import QueueRunner


def order_view(row: Row) -> OrderView:
    return from_row(OrderView, row, error="acme_order_failed" if row["status"] == "invalid" else None)


class AcmeHandlers:
    def __init__(self, acme: Acme, store: AcmeStore, cursors: CursorCodec, runner: QueueRunner[Any]) -> None:
        self.acme = acme
        self.store = store
        self.cursors = cursors
        self.runner = runner

    async def _page(self, ctx: RequestContext, kind: str, req: PageRequest, fetch: Any) -> tuple[list[Row], Any]:
        tenant = ctx.require_tenant()
        return await self.cursors.page(tenant, {"kind": kind, "limit": req.limit}, req.cursor, req.limit,
                                       lambda after, n: fetch(tenant, after, n), lambda last: last["id"])

    # -- accounts ----------------------------------------------------------------------------------

    @handles(contract.ACCOUNT_CREATE)
    async def create_account(self, req: AccountCreate, ctx: RequestContext) -> AccountView:
        return from_row(AccountView, await self.acme.create_account(ctx.require_tenant(), req))

    @handles(contract.ACCOUNT_GET)
    async def get_account(self, req: Ref, ctx: RequestContext) -> AccountView:
        return from_row(AccountView, await self.store.account(ctx.require_tenant(), req.id))

    @handles(contract.ACCOUNT_LIST)
    async def list_accounts(self, req: PageRequest, ctx: RequestContext) -> Page[AccountView]:
        rows, cursor = await self._page(ctx, "acme-accounts", req, self.store.list_accounts)
        return Page[AccountView](items=[from_row(AccountView, r) for r in rows], next_cursor=cursor)

    @handles(contract.ACCOUNT_DELETE)
    async def delete_account(self, req: Ref, ctx: RequestContext) -> None:
        await self.store.delete_account(ctx.require_tenant(), req.id)

    # -- DNS providers -----------------------------------------------------------------------------

    @handles(contract.PROVIDER_CREATE)
    async def create_provider(self, req: ProviderCreate, ctx: RequestContext) -> ProviderView:
        return from_row(ProviderView, await self.acme.create_provider(ctx.require_tenant(), req))

    @handles(contract.PROVIDER_GET)
    async def get_provider(self, req: Ref, ctx: RequestContext) -> ProviderView:
        return from_row(ProviderView, await self.store.provider(ctx.require_tenant(), req.id))

    @handles(contract.PROVIDER_LIST)
    async def list_providers(self, req: PageRequest, ctx: RequestContext) -> Page[ProviderView]:
        rows, cursor = await self._page(ctx, "acme-dns-providers", req, self.store.list_providers)
        return Page[ProviderView](items=[from_row(ProviderView, r) for r in rows], next_cursor=cursor)

    @handles(contract.PROVIDER_DELETE)
    async def delete_provider(self, req: Ref, ctx: RequestContext) -> None:
        await self.store.delete_provider(ctx.require_tenant(), req.id)

    # -- orders ------------------------------------------------------------------------------------

    @handles(contract.ORDER_CREATE)
    async def create_order(self, req: OrderCreate, ctx: RequestContext) -> OrderView:
        row = await self.acme.create_order(ctx.require_tenant(), ctx.identity_id, req)
        self.runner.wake()
        return order_view(row)

    @handles(contract.ORDER_GET)
    async def get_order(self, req: Ref, ctx: RequestContext) -> OrderView:
        return order_view(await self.store.order(ctx.require_tenant(), req.id))

    @handles(contract.ORDER_LIST)
    async def list_orders(self, req: OrderList, ctx: RequestContext) -> Page[OrderView]:
        tenant = ctx.require_tenant()
        rows, cursor = await self.cursors.page(
            tenant, {"kind": "acme-orders", "limit": req.limit, "status": req.status}, req.cursor, req.limit,
            lambda after, n: self.store.list_orders(tenant, req.status, after, n), lambda last: last["id"])
        return Page[OrderView](items=[order_view(r) for r in rows], next_cursor=cursor)

    @handles(contract.ORDER_KEY)
    async def order_key(self, req: Ref, ctx: RequestContext) -> OrderKey:
        tenant = ctx.require_tenant()
        row = await self.store.order_key(tenant, req.id)
        if row["serial"] is None:
            order = await self.store.order(tenant, req.id)
            if order["status"] == "invalid":
                raise AcmeOrderFailed("the order failed: it has no certificate",
                                      details={"id": req.id, "problem": order["problem"]})
            raise AcmeOrderNotFound(f"ACME order '{req.id}' has no certificate yet: it is {order['status']}",
                                    details={"id": req.id, "status": order["status"]})
        pem = keys.to_pem(keys.from_der(unseal(self.acme.kms.tenant(tenant), sealed_of(row), order_aad(row["id"]))))
        chain = [c for c in (row["chain"] or "").split("-----END CERTIFICATE-----") if c.strip()]
        return OrderKey(serial=row["serial"], certificate=row["certificate"],
                        chain=[c.strip() + "\n-----END CERTIFICATE-----\n" for c in chain],
                        private_key=pem, not_after=row["not_after"])

    @handles(contract.ORDER_DELETE)
    async def delete_order(self, req: Ref, ctx: RequestContext) -> None:
        await self.store.delete_order(ctx.require_tenant(), req.id)
