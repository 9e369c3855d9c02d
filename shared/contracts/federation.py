"""RPC contracts of federation backends (api.md §5.4), served by the ``secrets`` service, and their client.

A backend's ``config`` is checked by the service per type (``invalid_config`` naming the fields);
its credentials (``client_secret``, ``secret_access_key``) are sealed and never answered. No string in it
may hold a control character (they reach headers and URLs): 422 ``validation_error`` naming the field,
before anything is connected to or stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictStr

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
from shared.contracts.secrets import SECRET_POLICY_NAME

BACKEND_TYPES = ("coffer", "aws_secrets_manager")
#: a mount path as the description shows it: a secret path (api.md §5)
MOUNT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,15}$"


class BackendCreate(Contract):
    """``POST /v1/federation/backends``."""

    name: StrictStr = Field(pattern=SECRET_POLICY_NAME)
    type: Literal["coffer", "aws_secrets_manager"]
    mount_path: StrictStr = Field(min_length=1, max_length=512, json_schema_extra={"pattern": MOUNT_PATTERN})
    config: dict[StrictStr, HeaderSafeValue] = Field(repr=False, max_length=16)


class CofferConfig(Contract):
    url: HeaderSafeStr = Field(max_length=2048)
    client_id: HeaderSafeStr = Field(min_length=1, max_length=200)
    client_secret: HeaderSafeStr = Field(min_length=1, max_length=1000, repr=False)
    #: sent as ``X-Tenant-ID``
    tenant_id: HeaderSafeStr | None = Field(None, max_length=200)
    timeout: StrictStr = Field("5s", max_length=40, json_schema_extra=DURATION_SCHEMA)


class AwsConfig(Contract):
    region: StrictStr = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
    access_key_id: HeaderSafeStr = Field(min_length=1, max_length=128)
    secret_access_key: HeaderSafeStr = Field(min_length=1, max_length=1000, repr=False)
    endpoint_url: HeaderSafeStr | None = Field(None, max_length=2048)
    timeout: StrictStr = Field("5s", max_length=40, json_schema_extra=DURATION_SCHEMA)


#: the config fields that are credentials: sealed, never answered
CREDENTIALS = {"coffer": ("client_id", "client_secret"), "aws_secrets_manager": ("access_key_id",
                                                                                 "secret_access_key")}
#: of those, the ones an answer may show (an identifier, not a secret)
SHOWN = ("client_id", "access_key_id")


class BackendRef(Contract):
    name: StrictStr = Field(max_length=200)


class BackendView(Contract):
    name: str
    type: str
    mount_path: str
    #: the config without its secrets
    config: dict[str, Any]
    created_at: datetime


SERVICE = "secrets"
BACKEND_CREATE = Method(SERVICE, "backend_create", BackendCreate, BackendView)
BACKEND_GET = Method(SERVICE, "backend_get", BackendRef, BackendView)
BACKEND_LIST = Method(SERVICE, "backend_list", PageRequest, Page[BackendView])
BACKEND_DELETE = Method(SERVICE, "backend_delete", BackendRef, Empty)


class FederationClient(ServiceClient):
    """Federation backends, over the bus."""

    async def create(self, ctx: RequestContext, request: BackendCreate) -> BackendView:
        # creating connects to the backend (its own timeout, up to a minute)
        return await self._call(BACKEND_CREATE, ctx, request, timeout=70.0)

    async def get(self, ctx: RequestContext, request: BackendRef) -> BackendView:
        return await self._call(BACKEND_GET, ctx, request)

    async def list(self, ctx: RequestContext, request: PageRequest) -> Page[BackendView]:
        return await self._call(BACKEND_LIST, ctx, request)

    async def delete(self, ctx: RequestContext, request: BackendRef) -> None:
        await self._call(BACKEND_DELETE, ctx, request)
