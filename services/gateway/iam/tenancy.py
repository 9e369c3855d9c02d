"""Which tenant a request acts in, the root tenant, and each tenant's quotas (api.md §3)."""

from __future__ import annotations

import time

from aiohttp import web

from services.gateway.edge.listener import named_tenant
from services.gateway.iam.domain import Principal
from services.gateway.iam.models import retention_seconds
from services.gateway.iam.repository import IamRepository
from services.gateway.iam.tenants_repository import TenantRepository
from shared.errors import TenantAccessDenied, TenantNotFound

QUOTA_TTL = 5.0


class Tenancy:
    def __init__(self, tenants: TenantRepository, identities: IamRepository) -> None:
        self.tenants = tenants
        self.identities = identities
        self._root: str | None = None  # the root tenant never changes once sys/init made it
        self._quotas: dict[str, tuple[float, dict[str, int]]] = {}

    async def resolve(self, request: web.Request, who: Principal) -> str:
        """The tenant the request acts in: the caller's, or a descendant named by a partner admin (with
        ``X-Tenant-ID``, or ``X-Vault-Namespace`` on the Vault listener)."""
        target = await named_tenant(request, who)
        if not target or target == who.tenant_id:
            return who.tenant_id
        denied = TenantAccessDenied("you may not act in that tenant")
        me = await self.identities.identity_any_tenant(who.identity_id)
        home = await self.tenants.tenant(who.tenant_id)
        if me is None or not me["partner_admin"] or home is None or home["kind"] != "partner":
            raise denied  # the same answer whether the tenant exists or not
        if len(target) > 64 or await self.tenants.tenant(target) is None:
            raise TenantNotFound(details={"tenant_id": target[:64]})
        if not await self.tenants.in_subtree(who.tenant_id, target):
            raise denied
        return target

    async def root_tenant_id(self) -> str | None:
        """The root tenant (the one sys/init created, with no parent); ``None`` before sys/init."""
        if self._root is None:
            self._root = await self.tenants.root_tenant_id()
        return self._root

    async def is_root(self, tenant_id: str) -> bool:
        return tenant_id == await self.root_tenant_id()

    async def quotas(self, tenant_id: str) -> dict[str, int]:
        """The tenant's quotas that are set (cached a few seconds; a change on this replica drops the cache
        at once). The dict is shared: read it, don't change it."""
        cached = self._quotas.get(tenant_id)
        if cached and time.monotonic() - cached[0] < QUOTA_TTL:
            return cached[1]
        row = await self.tenants.tenant(tenant_id)
        quotas = {k: v for k, v in (row["quotas"] if row is not None else {}).items() if isinstance(v, int)}
        retention = retention_seconds(row["secret_retention"]) if row is not None else None
        if retention is not None:  # travels with the quotas: the secrets service applies it on delete
            quotas = {**quotas, "secret_retention": retention}
        if len(self._quotas) > 100_000:
            self._quotas.clear()
        self._quotas[tenant_id] = (time.monotonic(), quotas)
        return quotas

    def quotas_changed(self, tenant_id: str) -> None:
        self._quotas.pop(tenant_id, None)
