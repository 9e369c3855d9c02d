"""RPC methods every service answers, served by the runtime: ``ping``, ``rewrap`` (KEK rotation), ``shred`` (a
deleted tenant's keys) and ``tenant_kms`` (a tenant's own KMS key)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.context import RequestContext
from shared.contracts import Contract, Empty, Method, ServiceClient
from shared.registry import rpc_name


class PingRequest(Contract):
    """``<service>.ping``: ``gauges`` asks for the service's counts too (``/metrics`` only: a health check,
    which a balancer may send every second, costs the service no query beyond its outbox's)."""

    gauges: bool = False


class PingResult(Contract):
    """Reply of ``<service>.ping``: the service is up and its storage answers."""

    service: str
    status: str = "ok"
    #: outbox rows not yet confirmed by the broker (for /metrics)
    outbox_backlog: int | None = None
    #: the service's own gauges for /metrics (``ServiceSpec.gauges``): counts over every tenant, never a name
    gauges: dict[str, float] = Field(default_factory=dict)


class RewrapResult(Contract):
    """Reply of ``<service>.rewrap``: how many data keys moved to the active KEK, and how many would not open."""

    kek_id: str
    rewrapped: int
    unreadable: int = 0
    #: values still sealed under the root keyring's legacy KEKs (before the hierarchy) after the re-wrap
    legacy_left: int = 0


class ShredRequest(Contract):
    """``<service>.shred``: destroy a tenant's KEKs in the service's keyring (the gateway, deleting it)."""

    tenant_id: str


class ShredResult(Contract):
    service: str
    #: whether the tenant had keys in this service (a tombstone is left either way)
    destroyed: bool


class KmsKey(Contract):
    """A tenant's own KMS key (BYOK): ``{type: "awskms", key_id}`` (a key id, alias or ARN)."""

    type: Literal["awskms"]
    key_id: str = Field(min_length=1, max_length=2048, pattern=r"^[A-Za-z0-9:/_+=.,@-]+$")


class TenantKmsRequest(Contract):
    """``<service>.tenant_kms``: wrap the tenant's KEKs with its KMS key too (or, ``null``, no longer)."""

    tenant_id: str
    kms_key: KmsKey | None = None


def tenant_kms_method(service: str) -> Method[TenantKmsRequest, Empty]:
    return Method(rpc_name(service), "tenant_kms", TenantKmsRequest, Empty)


def shred_method(service: str) -> Method[ShredRequest, ShredResult]:
    return Method(rpc_name(service), "shred", ShredRequest, ShredResult)


def ping_method(service: str) -> Method[PingRequest, PingResult]:
    return Method(rpc_name(service), "ping", PingRequest, PingResult)


def rewrap_method(service: str) -> Method[Empty, RewrapResult]:
    return Method(rpc_name(service), "rewrap", Empty, RewrapResult)


class SystemClient(ServiceClient):
    """The methods every service answers, by service name."""

    async def ping(self, ctx: RequestContext, service: str, *, timeout: float | None = None,
                   gauges: bool = False) -> PingResult:
        return await self._call(ping_method(service), ctx, PingRequest(gauges=gauges), timeout=timeout)

    async def rewrap(self, ctx: RequestContext, service: str, *, timeout: float | None = None) -> RewrapResult:
        return await self._call(rewrap_method(service), ctx, Empty(), timeout=timeout)

    async def shred(self, ctx: RequestContext, service: str, tenant_id: str, *,
                    timeout: float | None = None) -> ShredResult:
        return await self._call(shred_method(service), ctx, ShredRequest(tenant_id=tenant_id), timeout=timeout)

    async def tenant_kms(self, ctx: RequestContext, service: str, request: TenantKmsRequest, *,
                         timeout: float | None = None) -> None:
        await self._call(tenant_kms_method(service), ctx, request, timeout=timeout)
