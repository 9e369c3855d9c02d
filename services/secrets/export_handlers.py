"""RPC handlers of exports (api.md §5.3): checked, stored as a pending job, its runner woken."""

from __future__ import annotations

from typing import Any

from services.secrets.export_store import ExportStore
from services.secrets.exports import check_keys, recipient_of
from shared.context import RequestContext
from shared.contracts import exports as contract
from shared.contracts import handles
from shared.contracts.exports import ExportBundle, ExportCreate, ExportRef, ExportView
from shared.contracts.secrets import validate_path, validate_prefix
from shared.errors import ValidationError
from shared.jobs import QueueRunner


class ExportHandlers:
    def __init__(self, store: ExportStore, runner: QueueRunner[Any]) -> None:
        self.store = store
        self.runner = runner

    @handles(contract.EXPORT_CREATE)
    async def create(self, req: ExportCreate, ctx: RequestContext) -> ExportView:
        prefix = validate_prefix(req.prefix)
        recipient_of(req.recipient)  # validation_error before anything is stored
        paths = [validate_path(p) for p in req.paths]
        if any(not p.startswith(prefix) for p in paths):
            raise ValidationError.on("paths", "every path must be under the prefix")
        if req.format == "dotenv":
            check_keys(paths, prefix)
        view = await self.store.create(ctx.require_tenant(), ctx.identity_id, prefix, req.format,
                                       req.recipient.strip(), sorted(set(paths)))
        self.runner.wake()
        return view

    @handles(contract.EXPORT_GET)
    async def get(self, req: ExportRef, ctx: RequestContext) -> ExportView:
        return await self.store.get(ctx.require_tenant(), req.id)

    @handles(contract.EXPORT_BUNDLE)
    async def bundle(self, req: ExportRef, ctx: RequestContext) -> ExportBundle:
        return ExportBundle(bundle=await self.store.bundle(ctx.require_tenant(), req.id))
