"""RPC contracts of the ``lease`` service (``lease.<method>``) and its typed client (api.md §7).

An engine's ``config`` arrives as the caller wrote it (its shape depends on
the engine type, checked by the service); what comes back is only its
non-secret part: admin passwords never leave the service.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictBool, StrictStr

from shared.context import RequestContext
from shared.contracts import (
    DURATION_SCHEMA,
    Contract,
    Empty,
    HeaderSafeStr,
    HeaderSafeValue,
    Method,
    Page,
    PageRequest,
    ServiceClient,
)

EngineType = Literal["postgresql", "rabbitmq", "redis"]
LeaseStatus = Literal["active", "revoking", "revoked", "expired"]
#: an engine's name (also a path segment of its policy resource)
ENGINE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


# -- engines ---------------------------------------------------------------------------------

class EngineCreate(Contract):
    name: StrictStr = Field(pattern=ENGINE_NAME)
    type: EngineType
    #: postgresql ``{connection_url, sslmode?}``; rabbitmq ``{management_url, username, password}``;
    #: redis ``{host, port, username, password, tls?}``
    config: dict[StrictStr, HeaderSafeValue] = Field(repr=False, max_length=20)


class EngineRef(Contract):
    name: StrictStr = Field(max_length=200)


class EnginePatchBody(Contract):
    #: make a new admin password, set it in the target and keep only it: no human knows it any more
    rotate_admin_password: StrictBool = False


class EnginePatch(EnginePatchBody):
    name: StrictStr = Field(max_length=200)


class EngineView(Contract):
    name: str
    type: str
    #: the config without its secrets (no password, no credentials in URLs)
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    admin_rotated_at: datetime | None


# -- roles -------------------------------------------------------------------------------------

class RoleBody(Contract):
    default_ttl: StrictStr = Field("1h", max_length=40, json_schema_extra=DURATION_SCHEMA)
    max_ttl: StrictStr = Field("24h", max_length=40, json_schema_extra=DURATION_SCHEMA)
    #: postgresql: SQL templates with {{name}}, {{password}}, {{expiration}}
    creation_statements: list[StrictStr] | None = Field(None, max_length=20)
    revocation_statements: list[StrictStr] | None = Field(None, max_length=20)
    #: rabbitmq: {vhost: {configure, write, read}} and user tags
    vhosts: dict[HeaderSafeStr, dict[StrictStr, StrictStr]] | None = Field(None, max_length=50)
    tags: list[HeaderSafeStr] | None = Field(None, max_length=10)
    #: redis: ACL rules (``~app:*``, ``+@read``)
    acl_rules: list[StrictStr] | None = Field(None, max_length=100)


class RolePut(RoleBody):
    engine: StrictStr = Field(max_length=200)
    name: StrictStr = Field(max_length=200)


class RoleRef(Contract):
    engine: StrictStr = Field(max_length=200)
    name: StrictStr = Field(max_length=200)


class RoleList(PageRequest):
    engine: StrictStr = Field(max_length=200)


class RoleView(RoleBody):
    engine: str
    name: str
    created_at: datetime
    updated_at: datetime


# -- credentials and leases ------------------------------------------------------------------------

class CredentialsBody(Contract):
    ttl: StrictStr | None = Field(None, max_length=40, json_schema_extra=DURATION_SCHEMA)


class CredentialsRequest(CredentialsBody):
    engine: StrictStr = Field(max_length=200)
    role: StrictStr = Field(max_length=200)


class Credentials(Contract):
    """``:credentials``' answer: the lease, and the user it made (the password in this answer only)."""

    lease_id: str
    lease_duration: int
    renewable: bool
    expires_at: datetime
    data: dict[str, str] = Field(repr=False)


class LeaseRef(Contract):
    id: StrictStr = Field(min_length=1, max_length=64)


class LeaseView(Contract):
    id: str
    engine: str
    role: str
    status: LeaseStatus
    issued_at: datetime
    expires_at: datetime
    max_expires_at: datetime


class LeaseList(PageRequest):
    engine: StrictStr | None = Field(None, max_length=200)
    role: StrictStr | None = Field(None, max_length=200)


class RenewBody(Contract):
    increment: StrictStr | None = Field(None, max_length=40, json_schema_extra=DURATION_SCHEMA)


class Renew(RenewBody):
    id: StrictStr = Field(min_length=1, max_length=64)


class RevokePrefix(Contract):
    engine: StrictStr = Field(max_length=200)
    role: StrictStr | None = Field(None, max_length=200)


class Revoking(Contract):
    """How many leases a revoke-prefix queued for revocation."""

    revoking: int


SERVICE = "lease"
ENGINE_CREATE = Method(SERVICE, "engine_create", EngineCreate, EngineView)
ENGINE_GET = Method(SERVICE, "engine_get", EngineRef, EngineView)
ENGINE_LIST = Method(SERVICE, "engine_list", PageRequest, Page[EngineView])
ENGINE_PATCH = Method(SERVICE, "engine_patch", EnginePatch, EngineView)
ENGINE_DELETE = Method(SERVICE, "engine_delete", EngineRef, Empty)
ROLE_PUT = Method(SERVICE, "role_put", RolePut, RoleView)
ROLE_GET = Method(SERVICE, "role_get", RoleRef, RoleView)
ROLE_LIST = Method(SERVICE, "role_list", RoleList, Page[RoleView])
ROLE_DELETE = Method(SERVICE, "role_delete", RoleRef, Empty)
CREDENTIALS = Method(SERVICE, "credentials", CredentialsRequest, Credentials)
LEASE_GET = Method(SERVICE, "lease_get", LeaseRef, LeaseView)
LEASE_LIST = Method(SERVICE, "lease_list", LeaseList, Page[LeaseView])
RENEW = Method(SERVICE, "renew", Renew, LeaseView)
REVOKE = Method(SERVICE, "revoke", LeaseRef, LeaseView)
REVOKE_PREFIX = Method(SERVICE, "revoke_prefix", RevokePrefix, Revoking)


class LeaseClient(ServiceClient):
    """The ``lease`` service, over the bus."""

    async def engine_create(self, ctx: RequestContext, request: EngineCreate) -> EngineView:
        return await self._call(ENGINE_CREATE, ctx, request, timeout=30)

    async def engine_get(self, ctx: RequestContext, request: EngineRef) -> EngineView:
        return await self._call(ENGINE_GET, ctx, request)

    async def engine_list(self, ctx: RequestContext, request: PageRequest) -> Page[EngineView]:
        return await self._call(ENGINE_LIST, ctx, request)

    async def engine_patch(self, ctx: RequestContext, request: EnginePatch) -> EngineView:
        return await self._call(ENGINE_PATCH, ctx, request, timeout=30)

    async def engine_delete(self, ctx: RequestContext, request: EngineRef) -> None:
        await self._call(ENGINE_DELETE, ctx, request)

    async def role_put(self, ctx: RequestContext, request: RolePut) -> RoleView:
        return await self._call(ROLE_PUT, ctx, request)

    async def role_get(self, ctx: RequestContext, request: RoleRef) -> RoleView:
        return await self._call(ROLE_GET, ctx, request)

    async def role_list(self, ctx: RequestContext, request: RoleList) -> Page[RoleView]:
        return await self._call(ROLE_LIST, ctx, request)

    async def role_delete(self, ctx: RequestContext, request: RoleRef) -> None:
        await self._call(ROLE_DELETE, ctx, request)

    async def credentials(self, ctx: RequestContext, request: CredentialsRequest) -> Credentials:
        return await self._call(CREDENTIALS, ctx, request, timeout=30)

    async def lease_get(self, ctx: RequestContext, request: LeaseRef) -> LeaseView:
        return await self._call(LEASE_GET, ctx, request)

    async def lease_list(self, ctx: RequestContext, request: LeaseList) -> Page[LeaseView]:
        return await self._call(LEASE_LIST, ctx, request)

    async def renew(self, ctx: RequestContext, request: Renew) -> LeaseView:
        return await self._call(RENEW, ctx, request)

    async def revoke(self, ctx: RequestContext, request: LeaseRef) -> LeaseView:
        return await self._call(REVOKE, ctx, request, timeout=30)

    async def revoke_prefix(self, ctx: RequestContext, request: RevokePrefix) -> Revoking:
        return await self._call(REVOKE_PREFIX, ctx, request)
