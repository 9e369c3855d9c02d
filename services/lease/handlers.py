"""RPC handlers of the lease service: a contract model in, the work done, a contract model out.

Every method acts in the request's tenant: engines, roles and leases of
another tenant are not found.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from services.lease.engines import ENGINE_TYPES
from services.lease.leases import Leases
from services.lease.repository import LeaseRepository, Row
from shared.context import RequestContext
from shared.contracts import from_row, handles
from shared.contracts import lease as contract
from shared.contracts.lease import (
    Credentials,
    CredentialsRequest,
    EngineCreate,
    EnginePatch,
    EngineRef,
    EngineView,
    LeaseList,
    LeaseRef,
    LeaseView,
    Page,
    PageRequest,
    Renew,
    RevokePrefix,
    Revoking,
    RoleList,
    RolePut,
    RoleRef,
    RoleView,
)
from shared.cursors import CursorCodec
from shared.durations import parse_duration
from shared.errors import InvalidRole, LeaseExpired, TtlExceedsMax
from shared.jobs import QueueRunner

ROLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_TYPE_FIELDS = {f for e in ENGINE_TYPES.values() for f in e.role_fields}


def _engine_view(row: Row) -> EngineView:
    config = {k: v for k, v in row["config"].items() if v is not None}
    return from_row(EngineView, row, config=config)


def _role_view(row: Row) -> RoleView:
    return RoleView.model_validate({**row["spec"], "engine": row["engine"], "name": row["name"],
                                    "created_at": row["created_at"], "updated_at": row["updated_at"]})


def _lease_view(row: Row | dict[str, Any]) -> LeaseView:
    status = row["status"]
    if status == "active" and row["expires_at"] <= datetime.now(UTC):
        status = "revoking"  # expired; its user is being removed
    return LeaseView(id=row["id"], engine=row["engine"], role=row["role"], status=status,
                     issued_at=row["issued_at"], expires_at=row["expires_at"], max_expires_at=row["max_expires_at"])


class LeaseHandlers:
    def __init__(self, repo: LeaseRepository, leases: Leases, cursors: CursorCodec,
                 sweeper: QueueRunner[Any] | None = None) -> None:
        self.repo = repo
        self.leases = leases
        self.cursors = cursors
        self.sweeper = sweeper

    async def _page(self, ctx: RequestContext, query: dict[str, Any], req: PageRequest, fetch: Any,
                    key: Any) -> tuple[list[Row], str | None]:
        tenant = ctx.require_tenant()
        return await self.cursors.page(tenant, {**query, "limit": req.limit}, req.cursor, req.limit,
                                       lambda after, n: fetch(tenant, after, n), key)

    # -- engines -----------------------------------------------------------------------------

    @handles(contract.ENGINE_CREATE)
    async def engine_create(self, req: EngineCreate, ctx: RequestContext) -> EngineView:
        tenant = ctx.require_tenant()
        public, secret = await self.leases.check_new(req.type, req.config, req.name)
        sealed = self.leases.engines.seal(tenant, req.name, secret)
        return _engine_view(await self.repo.insert_engine(tenant, req.name, req.type, public, sealed))

    @handles(contract.ENGINE_GET)
    async def engine_get(self, req: EngineRef, ctx: RequestContext) -> EngineView:
        return _engine_view(await self.repo.engine(ctx.require_tenant(), req.name))

    @handles(contract.ENGINE_LIST)
    async def engine_list(self, req: PageRequest, ctx: RequestContext) -> Page[EngineView]:
        rows, cursor = await self._page(ctx, {"kind": "engines"}, req, self.repo.list_engines, lambda r: r["name"])
        return Page[EngineView](items=[_engine_view(r) for r in rows], next_cursor=cursor)

    @handles(contract.ENGINE_PATCH)
    async def engine_patch(self, req: EnginePatch, ctx: RequestContext) -> EngineView:
        row = await self.repo.engine(ctx.require_tenant(), req.name, with_key=True)
        if req.rotate_admin_password:
            row = await self.leases.rotate_admin(row)
        return _engine_view(row)

    @handles(contract.ENGINE_DELETE)
    async def engine_delete(self, req: EngineRef, ctx: RequestContext) -> None:
        tenant = ctx.require_tenant()
        await self.repo.delete_engine(tenant, req.name)
        await self.leases.engines.drop(tenant, req.name)

    # -- roles -------------------------------------------------------------------------------

    @handles(contract.ROLE_PUT)
    async def role_put(self, req: RolePut, ctx: RequestContext) -> RoleView:
        tenant = ctx.require_tenant()
        if not ROLE_NAME.fullmatch(req.name):
            raise InvalidRole("a role name is 1-63 of a-z, 0-9, _ and -, starting with a letter or digit",
                              details={"name": req.name[:80]})
        engine = await self.repo.engine(tenant, req.engine)
        kind = ENGINE_TYPES[engine["type"]]
        body = req.model_dump(exclude={"engine", "name"})
        foreign = sorted(f for f in _TYPE_FIELDS - set(kind.role_fields) if body.get(f) is not None)
        if foreign:
            raise InvalidRole(f"'{foreign[0]}' is not a field of {engine['type']} roles",
                              details={"field": foreign[0]})
        default_ttl = parse_duration(req.default_ttl, field="default_ttl")
        max_ttl = parse_duration(req.max_ttl, field="max_ttl")
        if default_ttl > max_ttl:
            raise InvalidRole("default_ttl is longer than max_ttl", details={"field": "default_ttl"})
        spec = {"default_ttl": req.default_ttl, "max_ttl": req.max_ttl,
                **kind.role_spec(body, self.leases.engines.reach.limits)}
        return _role_view(await self.repo.put_role(tenant, req.engine, req.name, spec))

    @handles(contract.ROLE_GET)
    async def role_get(self, req: RoleRef, ctx: RequestContext) -> RoleView:
        return _role_view(await self.repo.role(ctx.require_tenant(), req.engine, req.name))

    @handles(contract.ROLE_LIST)
    async def role_list(self, req: RoleList, ctx: RequestContext) -> Page[RoleView]:
        rows, cursor = await self._page(
            ctx, {"kind": "roles", "engine": req.engine}, req,
            lambda tenant, after, n: self.repo.list_roles(tenant, req.engine, after, n), lambda r: r["name"])
        return Page[RoleView](items=[_role_view(r) for r in rows], next_cursor=cursor)

    @handles(contract.ROLE_DELETE)
    async def role_delete(self, req: RoleRef, ctx: RequestContext) -> None:
        await self.repo.delete_role(ctx.require_tenant(), req.engine, req.name)

    # -- credentials and leases ------------------------------------------------------------------

    @handles(contract.CREDENTIALS)
    async def credentials(self, req: CredentialsRequest, ctx: RequestContext) -> Credentials:
        tenant = ctx.require_tenant()
        engine, role = await self.repo.issuing(tenant, req.engine, req.role)
        max_ttl = parse_duration(role["spec"]["max_ttl"], field="max_ttl")
        ttl = parse_duration(req.ttl, field="ttl") if req.ttl is not None \
            else min(parse_duration(role["spec"]["default_ttl"], field="default_ttl"), max_ttl)
        if ttl > max_ttl:
            raise TtlExceedsMax(f"ttl is longer than the role's max_ttl ({role['spec']['max_ttl']})",
                                details={"ttl": req.ttl, "max_ttl": role["spec"]["max_ttl"]})
        lease, password = await self.leases.create(engine, role, ttl, max_ttl, ctx.request_id,
                                                   ctx.quota("max_leases"))
        return Credentials(lease_id=lease["id"], lease_duration=ttl, renewable=ttl < max_ttl,
                           expires_at=lease["expires_at"], data={"username": lease["username"], "password": password})

    @handles(contract.LEASE_GET)
    async def lease_get(self, req: LeaseRef, ctx: RequestContext) -> LeaseView:
        return _lease_view(await self.repo.lease(ctx.require_tenant(), req.id))

    @handles(contract.LEASE_LIST)
    async def lease_list(self, req: LeaseList, ctx: RequestContext) -> Page[LeaseView]:
        rows, cursor = await self._page(
            ctx, {"kind": "leases", "engine": req.engine, "role": req.role}, req,
            lambda tenant, after, n: self.repo.list_leases(tenant, req.engine, req.role, after, n),
            lambda r: r["id"])
        return Page[LeaseView](items=[_lease_view(r) for r in rows], next_cursor=cursor)

    @handles(contract.RENEW)
    async def renew(self, req: Renew, ctx: RequestContext) -> LeaseView:
        tenant = ctx.require_tenant()
        increment = parse_duration(req.increment, field="increment") if req.increment is not None else None
        current = await self.repo.lease(tenant, req.id)
        default_ttl = parse_duration(current["spec"]["default_ttl"], field="default_ttl")
        row, ended = await self.repo.renew(tenant, req.id, increment, default_ttl, ctx.request_id)
        if ended:
            view = _lease_view(row)
            raise LeaseExpired(f"lease '{row['id']}' has ended ({view.status}) and can't be renewed",
                               details={"id": row["id"], "status": view.status})
        return _lease_view(row)

    @handles(contract.REVOKE)
    async def revoke(self, req: LeaseRef, ctx: RequestContext) -> LeaseView:
        return _lease_view(await self.leases.revoke(ctx.require_tenant(), req.id, ctx.request_id))

    @handles(contract.REVOKE_PREFIX)
    async def revoke_prefix(self, req: RevokePrefix, ctx: RequestContext) -> Revoking:
        count = await self.repo.revoke_prefix(ctx.require_tenant(), req.engine, req.role)
        if self.sweeper is not None and count:
            self.sweeper.wake()
        return Revoking(revoking=count)
