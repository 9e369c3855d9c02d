"""A tenant's keys across the services (issue #29): its own KMS key set everywhere or nowhere, and its KEKs
destroyed before it is deleted.

Setting ``kms_key`` (BYOK, shared/byok.py) asks every service to wrap the tenant's KEKs with it. The key is
named by its ARN once the KMS has described it, so that one key has one name whatever the partner typed (an
id, an alias). A key already bound to a tenant outside the caller's reach is refused, and every refusal reads
the same (``invalid_config``, "the KMS key can't be used for this tenant"): a partner admin must not learn
whether another tenant's key exists, is enabled, or is in use. The real cause goes to the log.

A service that refuses undoes the change on the services that had made it (the previous key again), so the
tenant's row and every keyring agree: a tenant that disables the key the API shows is never left with a
service still opening its values without it. Should the undo itself fail, the log names the services left.
"""

from __future__ import annotations

import contextlib
from typing import Any

import structlog
from aiohttp import web

from services.gateway.edge.routes import context, principal
from services.gateway.state import GatewayState, state
from shared.byok import TenantKms
from shared.contracts.system import KmsKey, TenantKmsRequest
from shared.errors import CofferError, InvalidConfig
from shared.registry import SERVICES
from shared.seal import SealFailure

log = structlog.get_logger("coffer.gateway.tenant_keys")

UNUSABLE = "the KMS key can't be used for this tenant"
#: each service asks the KMS a few times per tenant KEK: more than an ordinary call's time
KMS_TIMEOUT = 30.0


def _refused() -> InvalidConfig:
    return InvalidConfig(UNUSABLE, details={"field": "kms_key"})


def _kms(st: GatewayState) -> TenantKms:
    settings = st.settings
    return TenantKms(settings.awskms_region, settings.awskms_endpoint_url,
                     settings.awskms_key_id if settings.seal == "awskms" else None)


async def _resolved(request: web.Request, tenant_id: str, key: KmsKey) -> dict[str, Any]:
    """``{type, key_id, arn}`` of a key this caller may give ``tenant_id``; the uniform refusal otherwise."""
    st, kms = state(request), _kms(state(request))
    try:
        await kms.refuse_platform_key(key.key_id)
        arn = await kms.arn(key.key_id)
    except (SealFailure, InvalidConfig) as exc:
        log.warning("tenant_kms_key_refused", tenant_id=tenant_id, reason=getattr(exc, "reason", None) or
                    getattr(exc, "details", {}).get("reason"))
        raise _refused() from None
    home = principal(request).tenant_id
    for other in await st.tenants.pool.fetch(
            "SELECT id FROM tenants WHERE kms_key->>'arn' = $1 AND id <> $2", arn, tenant_id):
        if not await st.tenants.in_subtree(home, other["id"]):
            log.warning("tenant_kms_key_refused", tenant_id=tenant_id, reason="bound_outside_reach")
            raise _refused()
    return {"type": key.type, "key_id": key.key_id, "arn": arn}


async def _everywhere(st: GatewayState, request: web.Request, tenant_id: str, key: dict[str, Any] | None,
                      previous: dict[str, Any] | None) -> None:
    ctx = context(request)

    def ask(value: dict[str, Any] | None) -> TenantKmsRequest:
        return TenantKmsRequest(tenant_id=tenant_id, kms_key=KmsKey(type="awskms", key_id=value["arn"] or
                                                                    value["key_id"]) if value else None)

    changed: list[str] = []
    try:
        for service in SERVICES:
            await st.services.tenant_kms(ctx, service, ask(key), timeout=KMS_TIMEOUT)
            changed.append(service)
    except CofferError as exc:
        left = []
        for service in changed:
            try:
                await st.services.tenant_kms(ctx, service, ask(previous), timeout=KMS_TIMEOUT)
            except CofferError:
                left.append(service)
        log.warning("tenant_kms_key_refused", tenant_id=tenant_id, code=exc.code, reason=exc.details.get("reason"))
        if left:
            log.error("tenant_kms_key_half_changed", tenant_id=tenant_id, services=left,
                      hint="set the tenant's kms_key again once the services and the KMS answer")
        raise _refused() from None


async def set_kms_key(request: web.Request, tenant_id: str, key: KmsKey | None,
                      previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """Wrap the tenant's KEKs with ``key`` in every service (``None``: no longer); what the row keeps."""
    st = state(request)
    resolved = await _resolved(request, tenant_id, key) if key is not None else None
    await _everywhere(st, request, tenant_id, resolved, previous)
    return resolved


async def shred(st: GatewayState, request: web.Request, tenant_id: str, *, best_effort: bool = False) -> None:
    """The tenant's KEKs destroyed in every service's keyring (crypto-shredding)."""
    ctx = context(request)
    for service in SERVICES:
        if best_effort:
            with contextlib.suppress(CofferError):
                await st.services.shred(ctx, service, tenant_id)
        else:
            await st.services.shred(ctx, service, tenant_id)
