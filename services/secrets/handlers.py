"""RPC handlers of the secrets service: a contract model in, the domain applied, a contract model out."""

from __future__ import annotations

from datetime import UTC, datetime

from services.secrets.domain import validate_write, value_of
from services.secrets.repository import SecretsStore
from shared.context import RequestContext
from shared.contracts import handles
from shared.contracts import secrets as contract
from shared.contracts.secrets import (
    ListSecrets,
    ListVersions,
    PutSecret,
    SecretMeta,
    SecretPage,
    SecretRef,
    SecretView,
    WriteResult,
    validate_path,
    validate_prefix,
)
from shared.cursors import CursorCodec
from shared.errors import SecretExpired


class SecretsHandlers:
    def __init__(self, repo: SecretsStore, cursors: CursorCodec, retention_seconds: int) -> None:
        self.repo = repo
        self.cursors = cursors
        self.retention = retention_seconds

    @handles(contract.PUT)
    async def put(self, req: PutSecret, ctx: RequestContext) -> WriteResult:
        path = validate_path(req.path)
        write = validate_write(req, datetime.now(UTC))
        created, meta = await self.repo.put(ctx.require_tenant(), ctx.identity_id, ctx.request_id, path, write,
                                            req.expected_version, ctx.quota("max_secrets"))
        return WriteResult(created=created, secret=meta)

    @handles(contract.GET)
    async def get(self, req: SecretRef, ctx: RequestContext) -> SecretView:
        path = validate_path(req.path)
        meta, plaintext = await self.repo.get(ctx.require_tenant(), path, req.version)
        if meta.expires_at is not None and meta.expires_at <= datetime.now(UTC):
            raise SecretExpired(f"Secret '{path}' expired",
                                details={"path": path, "expires_at": meta.expires_at.isoformat()})
        return SecretView.model_validate({**vars(meta), "value": value_of(plaintext)})

    @handles(contract.VERSIONS)
    async def versions(self, req: ListVersions, ctx: RequestContext) -> SecretPage:
        tenant, path = ctx.require_tenant(), validate_path(req.path)
        items, cursor = await self.cursors.page(
            tenant, {"kind": "versions", "path": path, "limit": req.limit}, req.cursor, req.limit,
            lambda before, n: self.repo.versions(tenant, path, before, n), lambda last: last.version)
        return SecretPage(items=items, next_cursor=cursor)

    @handles(contract.LIST)
    async def list(self, req: ListSecrets, ctx: RequestContext) -> SecretPage:
        tenant, prefix = ctx.require_tenant(), validate_prefix(req.prefix)
        items, cursor = await self.cursors.page(
            tenant, {"kind": "secrets", "prefix": prefix, "limit": req.limit}, req.cursor, req.limit,
            lambda after, n: self.repo.list(tenant, prefix, after, n), lambda last: last.path)
        return SecretPage(items=items, next_cursor=cursor)

    @handles(contract.DELETE)
    async def delete(self, req: SecretRef, ctx: RequestContext) -> None:
        await self.repo.soft_delete(ctx.require_tenant(), ctx.request_id, validate_path(req.path), self.retention)

    @handles(contract.RESTORE)
    async def restore(self, req: SecretRef, ctx: RequestContext) -> SecretMeta:
        return await self.repo.restore(ctx.require_tenant(), ctx.request_id, validate_path(req.path))

    @handles(contract.PURGE)
    async def purge(self, req: SecretRef, ctx: RequestContext) -> None:
        await self.repo.purge(ctx.require_tenant(), ctx.request_id, validate_path(req.path))
