"""RPC handlers of the secrets service: a contract model in, the domain applied, a contract model out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.secrets.domain import check_policies, validate_write, value_of
from services.secrets.repository import SecretsStore
from shared.context import RequestContext
from shared.contracts import Page, PageRequest, from_row, handles
from shared.contracts import secrets as contract
from shared.contracts.secrets import (
    SECRET_TYPES,
    ListSecrets,
    ListVersions,
    PutSecret,
    SecretMeta,
    SecretPage,
    SecretPolicyCreate,
    SecretPolicyRef,
    SecretPolicyView,
    SecretRef,
    SecretView,
    WriteResult,
    validate_path,
    validate_prefix,
)
from shared.cursors import CursorCodec
from shared.durations import parse_duration
from shared.errors import InvalidSecretType, SecretExpired
from shared.globs import compile_glob


class SecretsHandlers:
    def __init__(self, repo: SecretsStore, cursors: CursorCodec, retention_seconds: int) -> None:
        self.repo = repo
        self.cursors = cursors
        self.retention = retention_seconds

    @handles(contract.PUT)
    async def put(self, req: PutSecret, ctx: RequestContext) -> WriteResult:
        path = validate_path(req.path)
        now = datetime.now(UTC)
        write = validate_write(req, now)
        created, meta = await self.repo.put(ctx.require_tenant(), ctx.identity_id, ctx.request_id, path, write,
                                            req.expected_version, ctx.quota("max_secrets"),
                                            check=lambda policies: check_policies(policies, path, write, now))
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
        retention = ctx.quota("secret_retention") or self.retention  # the tenant's, else the platform's
        await self.repo.soft_delete(ctx.require_tenant(), ctx.request_id, validate_path(req.path), retention)

    @handles(contract.RESTORE)
    async def restore(self, req: SecretRef, ctx: RequestContext) -> SecretMeta:
        return await self.repo.restore(ctx.require_tenant(), ctx.request_id, validate_path(req.path))

    @handles(contract.PURGE)
    async def purge(self, req: SecretRef, ctx: RequestContext) -> None:
        await self.repo.purge(ctx.require_tenant(), ctx.request_id, validate_path(req.path))

    # -- secret policies (api.md §5.1) ------------------------------------------------------------

    def _policy_values(self, req: SecretPolicyCreate) -> dict[str, Any]:
        compile_glob(req.path_pattern)  # invalid_glob
        if req.max_ttl is not None:
            parse_duration(req.max_ttl, field="max_ttl")  # invalid_duration
        unknown = sorted(set(req.allowed_types or ()) - set(SECRET_TYPES))
        if unknown:
            raise InvalidSecretType("unknown secret type in allowed_types",
                                    details={"secret_type": unknown[0][:64], "allowed": list(SECRET_TYPES)})
        return req.model_dump()

    @handles(contract.POLICY_CREATE)
    async def policy_create(self, req: SecretPolicyCreate, ctx: RequestContext) -> SecretPolicyView:
        row = await self.repo.put_policy(ctx.require_tenant(), self._policy_values(req), create=True)
        return from_row(SecretPolicyView, row)

    @handles(contract.POLICY_PUT)
    async def policy_put(self, req: SecretPolicyCreate, ctx: RequestContext) -> SecretPolicyView:
        row = await self.repo.put_policy(ctx.require_tenant(), self._policy_values(req), create=False)
        return from_row(SecretPolicyView, row)

    @handles(contract.POLICY_GET)
    async def policy_get(self, req: SecretPolicyRef, ctx: RequestContext) -> SecretPolicyView:
        return from_row(SecretPolicyView, await self.repo.policy(ctx.require_tenant(), req.name))

    @handles(contract.POLICY_LIST)
    async def policy_list(self, req: PageRequest, ctx: RequestContext) -> Page[SecretPolicyView]:
        tenant = ctx.require_tenant()
        rows, cursor = await self.cursors.page(
            tenant, {"kind": "secret-policies", "limit": req.limit}, req.cursor, req.limit,
            lambda after, n: self.repo.list_policies(tenant, after, n), lambda last: last["name"])
        return Page[SecretPolicyView](items=[from_row(SecretPolicyView, r) for r in rows], next_cursor=cursor)

    @handles(contract.POLICY_DELETE)
    async def policy_delete(self, req: SecretPolicyRef, ctx: RequestContext) -> None:
        await self.repo.delete_policy(ctx.require_tenant(), req.name)
