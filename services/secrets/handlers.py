"""RPC handlers of the secrets service: a contract model in, the domain applied, a contract model out."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from services.secrets.domain import check_policies, validate_write, value_of
from services.secrets.federation import Federation
from services.secrets.repository import SecretsStore
from services.secrets.rotation_store import RotationStore
from shared.context import RequestContext
from shared.contracts import Page, PageRequest, from_row, handles
from shared.contracts import secrets as contract
from shared.contracts.secrets import (
    SECRET_TYPES,
    ListSecrets,
    ListVersions,
    PutSecret,
    RotateSecret,
    RotationPolicyCreate,
    RotationPolicyView,
    SecretMeta,
    SecretPage,
    SecretPolicyCreate,
    SecretPolicyRef,
    SecretPolicyView,
    SecretRef,
    SecretView,
    VersionsChange,
    WriteResult,
    validate_path,
    validate_prefix,
)
from shared.contracts.times import rfc3339
from shared.cursors import CursorCodec
from shared.durations import parse_duration
from shared.errors import InvalidDuration, InvalidRequest, InvalidSecretType, SecretExpired, VersionNotFound
from shared.globs import compile_glob

V = TypeVar("V", bound=BaseModel)


class SecretsHandlers:
    def __init__(self, repo: SecretsStore, cursors: CursorCodec, retention_seconds: int,
                 rotation: RotationStore | None = None, min_interval: int = 60,
                 federation: Federation | None = None) -> None:
        self.repo = repo
        self.cursors = cursors
        self.retention = retention_seconds
        self._rotation = rotation
        self.min_interval = min_interval
        self.federation = federation

    async def _mount(self, tenant_id: str, path: str) -> Any:
        """The federation mount ``path`` (or a list prefix) falls under, if any (api.md §5.4)."""
        return await self.federation.mount_of(tenant_id, path) if self.federation is not None else None

    async def _writable(self, ctx: RequestContext, path: str) -> str:
        """``path``, if no mount covers it: mounts are read-only (``invalid_request``)."""
        mount = await self._mount(ctx.require_tenant(), validate_path(path))
        if mount is not None:
            raise InvalidRequest(f"'{path}' is under the read-only mount '{mount['mount_path']}'",
                                 details={"path": path, "backend": mount["name"]})
        return path

    @property
    def rotation(self) -> RotationStore:
        assert self._rotation is not None, "rotation needs the PostgreSQL store"
        return self._rotation

    @handles(contract.PUT)
    async def put(self, req: PutSecret, ctx: RequestContext) -> WriteResult:
        path = await self._writable(ctx, req.path)
        now = datetime.now(UTC)
        write = validate_write(req, now)
        created, meta = await self.repo.put(ctx.require_tenant(), ctx.identity_id, ctx.request_id, path, write,
                                            req.expected_version, ctx.quota("max_secrets"),
                                            check=lambda policies: check_policies(policies, path, write, now))
        return WriteResult(created=created, secret=meta)

    @handles(contract.GET)
    async def get(self, req: SecretRef, ctx: RequestContext) -> SecretView:
        path = validate_path(req.path)
        if (mount := await self._mount(ctx.require_tenant(), path)) is not None:
            assert self.federation is not None
            view = await self.federation.read(ctx.require_tenant(), mount, path, ctx.deadline)
            if req.version is not None and req.version != view.version:  # a backend answers its current one
                raise VersionNotFound(f"Secret '{path}' has no version {req.version}",
                                      details={"path": path, "version": req.version})
            return view
        meta, plaintext = await self.repo.get(ctx.require_tenant(), path, req.version)
        if meta.expires_at is not None and meta.expires_at <= datetime.now(UTC):
            raise SecretExpired(f"Secret '{path}' expired",
                                details={"path": path, "expires_at": rfc3339(meta.expires_at)})
        return SecretView.model_validate({**vars(meta), "value": value_of(plaintext)})

    @handles(contract.VERSIONS)
    async def versions(self, req: ListVersions, ctx: RequestContext) -> SecretPage:
        tenant, path = ctx.require_tenant(), validate_path(req.path)
        if (mount := await self._mount(tenant, path)) is not None:  # a backend shows its current version only
            assert self.federation is not None
            view = await self.federation.read(tenant, mount, path, ctx.deadline)
            return SecretPage(items=[SecretMeta.model_validate(view.model_dump(exclude={"value"}))], next_cursor=None)
        items, cursor = await self.cursors.page(
            tenant, {"kind": "versions", "path": path, "limit": req.limit}, req.cursor, req.limit,
            lambda before, n: self.repo.versions(tenant, path, before, n), lambda last: last.version)
        return SecretPage(items=items, next_cursor=cursor)

    @handles(contract.LIST)
    async def list(self, req: ListSecrets, ctx: RequestContext) -> SecretPage:
        tenant, prefix = ctx.require_tenant(), validate_prefix(req.prefix)
        if prefix and (mount := await self._mount(tenant, prefix.removesuffix("/"))) is not None:
            return await self._list_mounted(tenant, mount, prefix, req, ctx)
        items, cursor = await self.cursors.page(
            tenant, {"kind": "secrets", "prefix": prefix, "limit": req.limit}, req.cursor, req.limit,
            lambda after, n: self.repo.list(tenant, prefix, after, n), lambda last: last.path)
        return SecretPage(items=items, next_cursor=cursor)

    async def _list_mounted(self, tenant: str, mount: Any, prefix: str, req: ListSecrets,
                            ctx: RequestContext) -> SecretPage:
        """A page from the backend; its own cursor travels inside ours (signed, bound to tenant and query)."""
        assert self.federation is not None
        query = {"kind": "mounted", "prefix": prefix, "limit": req.limit}
        upstream = self.cursors.decode(req.cursor, tenant, query) if req.cursor else None
        items, nxt = await self.federation.list_under(tenant, mount, prefix, upstream, req.limit, ctx.deadline)
        return SecretPage(items=[i for i in items if i.path.startswith(prefix)],
                          next_cursor=self.cursors.encode(tenant, query, nxt) if nxt else None)

    @handles(contract.DELETE)
    async def delete(self, req: SecretRef, ctx: RequestContext) -> None:
        retention = ctx.quota("secret_retention") or self.retention  # the tenant's, else the platform's
        await self.repo.soft_delete(ctx.require_tenant(), ctx.request_id, await self._writable(ctx, req.path),
                                    retention)

    @handles(contract.RESTORE)
    async def restore(self, req: SecretRef, ctx: RequestContext) -> SecretMeta:
        return await self.repo.restore(ctx.require_tenant(), ctx.request_id, await self._writable(ctx, req.path))

    @handles(contract.PURGE)
    async def purge(self, req: SecretRef, ctx: RequestContext) -> None:
        await self.repo.purge(ctx.require_tenant(), ctx.request_id, await self._writable(ctx, req.path))

    # -- one version at a time (Vault's KV v2, api.md §13) ----------------------------------------

    async def _change(self, req: VersionsChange, ctx: RequestContext, change: str) -> None:
        await self.repo.change_versions(ctx.require_tenant(), ctx.request_id, await self._writable(ctx, req.path),
                                        req.versions, change)

    @handles(contract.DELETE_VERSIONS)
    async def delete_versions(self, req: VersionsChange, ctx: RequestContext) -> None:
        await self._change(req, ctx, "delete")

    @handles(contract.UNDELETE_VERSIONS)
    async def undelete_versions(self, req: VersionsChange, ctx: RequestContext) -> None:
        await self._change(req, ctx, "undelete")

    @handles(contract.DESTROY_VERSIONS)
    async def destroy_versions(self, req: VersionsChange, ctx: RequestContext) -> None:
        await self._change(req, ctx, "destroy")

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

    async def _named_page(self, kind: str, view: type[V], lister: Any, req: PageRequest,
                          ctx: RequestContext) -> Page[V]:
        """A page of a tenant's policies of one ``kind``, in name order: ``lister(tenant, after, n)``."""
        tenant = ctx.require_tenant()
        rows, cursor = await self.cursors.page(
            tenant, {"kind": kind, "limit": req.limit}, req.cursor, req.limit,
            lambda after, n: lister(tenant, after, n), lambda last: last["name"])
        return Page[view](items=[from_row(view, r) for r in rows], next_cursor=cursor)  # type: ignore[valid-type]

    @handles(contract.POLICY_LIST)
    async def policy_list(self, req: PageRequest, ctx: RequestContext) -> Page[SecretPolicyView]:
        return await self._named_page("secret-policies", SecretPolicyView, self.repo.list_policies, req, ctx)

    @handles(contract.POLICY_DELETE)
    async def policy_delete(self, req: SecretPolicyRef, ctx: RequestContext) -> None:
        await self.repo.delete_policy(ctx.require_tenant(), req.name)

    # -- rotation (api.md §5.2) -------------------------------------------------------------------

    @handles(contract.ROTATE)
    async def rotate(self, req: RotateSecret, ctx: RequestContext) -> SecretMeta:
        return await self.rotation.rotate(ctx.require_tenant(), ctx.identity_id, ctx.request_id,
                                          await self._writable(ctx, req.path))

    def _interval(self, req: RotationPolicyCreate) -> int:
        compile_glob(req.path_pattern)  # invalid_glob
        seconds = parse_duration(req.interval, field="interval")  # invalid_duration
        if seconds < self.min_interval:
            raise InvalidDuration(f"'interval' must be at least {self.min_interval} seconds",
                                  details={"field": "interval", "min_seconds": self.min_interval})
        return seconds

    async def _rotation_put(self, req: RotationPolicyCreate, ctx: RequestContext, create: bool) -> RotationPolicyView:
        seconds = self._interval(req)
        row = await self.rotation.put_policy(ctx.require_tenant(), req.model_dump(), seconds, create=create)
        return from_row(RotationPolicyView, row)

    @handles(contract.ROTATION_CREATE)
    async def rotation_create(self, req: RotationPolicyCreate, ctx: RequestContext) -> RotationPolicyView:
        return await self._rotation_put(req, ctx, True)

    @handles(contract.ROTATION_PUT)
    async def rotation_put(self, req: RotationPolicyCreate, ctx: RequestContext) -> RotationPolicyView:
        return await self._rotation_put(req, ctx, False)

    @handles(contract.ROTATION_GET)
    async def rotation_get(self, req: SecretPolicyRef, ctx: RequestContext) -> RotationPolicyView:
        return from_row(RotationPolicyView, await self.rotation.policy(ctx.require_tenant(), req.name))

    @handles(contract.ROTATION_LIST)
    async def rotation_list(self, req: PageRequest, ctx: RequestContext) -> Page[RotationPolicyView]:
        return await self._named_page("rotation-policies", RotationPolicyView, self.rotation.list_policies, req, ctx)

    @handles(contract.ROTATION_DELETE)
    async def rotation_delete(self, req: SecretPolicyRef, ctx: RequestContext) -> None:
        await self.rotation.delete_policy(ctx.require_tenant(), req.name)
