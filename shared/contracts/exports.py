"""RPC contracts of exports (api.md §5.3), served by the ``secrets`` service, and their typed client.

The gateway decides which secrets the caller may ``read`` (its policies, its
address, the time of the request) and sends their paths; the service seals
the values it finds at those paths, when the job runs, into an age bundle.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field, StrictStr

from shared.context import RequestContext
from shared.contracts import Contract, Method, ServiceClient
from shared.contracts.secrets import PREFIX_PATTERN

EXPORT_ID = r"^exp_[0-9a-f]{24}$"
#: what a recipient looks like (its checksum and key are checked by the service)
RECIPIENT_PATTERN = r"^\s*(age1[0-9a-z]{58}|ssh-ed25519 [A-Za-z0-9+/=]+( [^\n]*)?)\s*$"


class ExportBody(Contract):
    """The JSON body of ``POST /v1/exports``."""

    prefix: StrictStr = Field(max_length=512, json_schema_extra={"pattern": PREFIX_PATTERN})
    format: Literal["json", "dotenv"]
    #: an age X25519 recipient (``age1…``) or an ``ssh-ed25519`` public key
    recipient: StrictStr = Field(min_length=1, max_length=1000, json_schema_extra={"pattern": RECIPIENT_PATTERN})


class ExportCreate(ExportBody):
    """``secrets.export_create``: the paths the caller may read under the prefix, in path order."""

    paths: list[StrictStr] = Field(max_length=10_000)


class ExportRef(Contract):
    id: StrictStr = Field(max_length=64)


class ExportView(Contract):
    """An export: while ``pending``, ``done`` of ``count`` secrets are in; once ``ready``, ``count`` says how
    many went in (a secret deleted or expired in between is left out)."""

    id: str
    status: Literal["pending", "ready", "failed"]
    prefix: str
    format: str
    count: int
    done: int
    error: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime


class ExportBundle(Contract):
    """``secrets.export_bundle``: the age-format bundle (base64 on the bus)."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    bundle: bytes


SERVICE = "secrets"
EXPORT_CREATE = Method(SERVICE, "export_create", ExportCreate, ExportView)
EXPORT_GET = Method(SERVICE, "export_get", ExportRef, ExportView)
EXPORT_BUNDLE = Method(SERVICE, "export_bundle", ExportRef, ExportBundle)


class ExportsClient(ServiceClient):
    """Exports, over the bus."""

    async def create(self, ctx: RequestContext, request: ExportCreate) -> ExportView:
        return await self._call(EXPORT_CREATE, ctx, request)

    async def get(self, ctx: RequestContext, request: ExportRef) -> ExportView:
        return await self._call(EXPORT_GET, ctx, request)

    async def bundle(self, ctx: RequestContext, request: ExportRef) -> ExportBundle:
        return await self._call(EXPORT_BUNDLE, ctx, request, timeout=30.0)
