"""RPC handlers of the secrets service: parse the contract, apply the domain, call the repository."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.secrets.domain import validate_write, value_of
from services.secrets.repository import SecretsRepository
from shared.bus import RpcHandler
from shared.context import RequestContext
from shared.contracts import parse
from shared.contracts.secrets import (
    ListSecrets,
    ListVersions,
    PutSecret,
    SecretPage,
    SecretRef,
    WriteResult,
    validate_path,
    validate_prefix,
)
from shared.cursors import CursorCodec
from shared.errors import Forbidden, SecretExpired


def _tenant(ctx: RequestContext) -> str:
    if not ctx.tenant_id:
        raise Forbidden("no tenant in the request context")
    return ctx.tenant_id


class SecretsHandlers:
    def __init__(self, repo: SecretsRepository, cursors: CursorCodec, retention_seconds: int) -> None:
        self.repo = repo
        self.cursors = cursors
        self.retention = retention_seconds

    def table(self) -> dict[str, RpcHandler]:
        return {"put": self.put, "get": self.get, "versions": self.versions, "list": self.list,
                "delete": self.delete, "restore": self.restore, "purge": self.purge,
                "rewrap": self.rewrap}

    async def put(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        req = parse(PutSecret, payload)
        path = validate_path(req.path)
        write = validate_write(req, datetime.now(UTC))
        created, meta = await self.repo.put(
            _tenant(ctx), ctx.identity_id, ctx.request_id, path, write, req.expected_version, req.max_secrets)
        return WriteResult(created=created, secret=meta).model_dump(mode="json")

    async def get(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        req = parse(SecretRef, payload)
        path = validate_path(req.path)
        meta, plaintext = await self.repo.get(_tenant(ctx), path, req.version)
        if meta.expires_at is not None and meta.expires_at <= datetime.now(UTC):
            raise SecretExpired(f"Secret '{path}' expired",
                                details={"path": path, "expires_at": meta.expires_at.isoformat()})
        return {**meta.model_dump(mode="json"), "value": value_of(plaintext)}

    async def versions(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        req = parse(ListVersions, payload)
        tenant, path = _tenant(ctx), validate_path(req.path)
        items, cursor = await self.cursors.page(
            tenant, {"kind": "versions", "path": path, "limit": req.limit}, req.cursor, req.limit,
            lambda before, n: self.repo.versions(tenant, path, before, n), lambda last: last.version)
        return SecretPage(items=items, next_cursor=cursor).model_dump(mode="json")

    async def list(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        req = parse(ListSecrets, payload)
        tenant, prefix = _tenant(ctx), validate_prefix(req.prefix)
        items, cursor = await self.cursors.page(
            tenant, {"kind": "secrets", "prefix": prefix, "limit": req.limit}, req.cursor, req.limit,
            lambda after, n: self.repo.list(tenant, prefix, after, n), lambda last: last.path)
        return SecretPage(items=items, next_cursor=cursor).model_dump(mode="json")

    async def delete(self, payload: dict[str, Any], ctx: RequestContext) -> None:
        req = parse(SecretRef, payload)
        await self.repo.soft_delete(_tenant(ctx), ctx.request_id, validate_path(req.path), self.retention)

    async def restore(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        req = parse(SecretRef, payload)
        meta = await self.repo.restore(_tenant(ctx), ctx.request_id, validate_path(req.path))
        return meta.model_dump(mode="json")

    async def purge(self, payload: dict[str, Any], ctx: RequestContext) -> None:
        req = parse(SecretRef, payload)
        await self.repo.purge(_tenant(ctx), ctx.request_id, validate_path(req.path))

    async def rewrap(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        moved, unreadable = await self.repo.rewrap()
        return {"kek_id": self.repo.kms.active_key_id, "rewrapped": moved, "unreadable": unreadable}
