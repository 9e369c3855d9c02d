"""Every event type the platform publishes: what its ``data`` holds, as a model with its description.

An event is ``{id, type, tenant_id, occurred_at, request_id, data}`` (``events.Event``); what ``data`` holds
depends on the type, and is one of the models below. The outbox checks every event against its type's model
before it is written (``check``): an event of a type described nowhere, or whose ``data`` says something
its description does not, is a bug that fails the change carrying it — so the description served as
AsyncAPI (``GET /v1/asyncapi.json``, ``shared.asyncapi``) is the events as they are published. No model
holds a secret value, a key or a credential.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as _PydanticError

from shared.errors import InternalError
from shared.registry import owner_of


class EventData(BaseModel):
    """The ``data`` of an event: nothing it does not name."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _f(description: str, default: Any = ...) -> Any:
    return Field(default, description=description)


Serial = _f("the certificate's serial number (hex)")
NotAfter = _f("when the certificate ends (RFC 3339)")


class SecretChange(EventData):
    """A version of a secret, after the change."""

    path: str = _f("the secret's path")
    version: int = _f("its version after the change (the version deleted, restored, purged or expired)")
    secret_type: str = _f("its type (`generic`, `password`, `json`, …)")


class SecretRotated(EventData):
    """A rotation policy gave a secret a new value (instead of ``secret.updated``)."""

    path: str = _f("the secret's path")
    version: int = _f("the new version")
    rotation_policy: str = _f("the rotation policy that made it")


class SecretRotationFailed(EventData):
    """A scheduled rotation failed; it is tried again at ``next_attempt_at``."""

    path: str = _f("the secret's path")
    rotation_policy: str = _f("the rotation policy")
    attempt: int = _f("how many attempts failed in a row")
    error: str = _f("the error code of the last attempt")
    next_attempt_at: str = _f("when it is tried again (RFC 3339)")


class SecretVersionsChange(EventData):
    """Versions of a secret were soft-deleted, restored or destroyed one by one (KV v2's per-version calls)."""

    path: str = _f("the secret's path")
    versions: list[int] = _f("the versions that changed")


class AccessRequestChange(EventData):
    """An access request (api.md §14): who asked for which policy, for how long, who may approve and who did.
    Never a secret: ``reason`` and ``comment`` are what the people involved wrote."""

    id: str = _f("the request's id (`acr_…`)")
    status: str = _f("its status after the change: pending, approved, denied, cancelled, revoked or expired")
    requester: str = _f("the requesting identity's id")
    requester_name: str | None = _f("its name")
    policy: str = _f("the policy asked for")
    duration: str = _f("for how long, once granted (`1h`)")
    approvals_required: int = _f("how many distinct approvers it needs")
    approved_by: list[str] = _f("the identities that approved it so far")
    approvers: list[str] | None = _f("who may approve (`idn_…`, `policy:<name>`); null: anyone holding approve")
    reason: str | None = _f("why it was asked for (access.requested)", None)
    expires_at: str | None = _f("when the grant ends (access.approved; RFC 3339)", None)
    comment: str | None = _f("the decider's comment", None)
    denied_by: str | None = _f("who denied it (access.denied)", None)
    by: str | None = _f("who cancelled or revoked it", None)
    cause: str | None = _f("why it expired: unanswered, or the grant's time was up (access.expired)", None)


class TokenRevoked(EventData):
    """Tokens stopped working: one token (``jti``), every token of an identity older than ``generation``, or
    every token of a deleted identity (``identity_id`` alone)."""

    identity_id: str | None = _f("the identity whose tokens are void", None)
    generation: int | None = _f("its tokens issued before this generation are void", None)
    jti: str | None = _f("the revoked token's id", None)
    tenant_id: str | None = _f("the revoked token's tenant", None)
    expires_at: str | None = _f("when the revoked token would have expired (RFC 3339)", None)


class PolicyChange(EventData):
    """A policy, or who it applies to (a binding), changed."""

    id: str = _f("the policy's id")
    name: str | None = _f("the policy's name", None)
    binding_id: str | None = _f("the binding made or removed, when a binding changed", None)
    identity_id: str | None = _f("the external identity whose bindings a login changed", None)


class TenantDeleted(EventData):
    """A tenant and everything in it are gone (its keys destroyed first)."""

    tenant_id: str = _f("the tenant")
    name: str = _f("its name")
    parent_id: str | None = _f("its parent tenant", None)


class Maintenance(EventData):
    """Maintenance mode changed (no tenant's: not streamed)."""

    enabled: bool = _f("whether calls are refused with `maintenance_mode`")
    message: str | None = _f("what the refusals say", None)


class SealChange(EventData):
    """The platform was sealed, or its root key rotated (the root tenant's)."""

    type: str = _f("the seal (`shamir`, `awskms`, `pkcs11`)")
    by: str | None = _f("the identity that asked", None)


class Unsealed(EventData):
    """The platform was unsealed (the root tenant's)."""

    type: str = _f("the seal")
    how: str | None = _f("`shares`, `auto` or `init`", None)
    took_ms: float | None = _f("milliseconds from the first share (or the start) to unsealed", None)


class AdminRecovered(EventData):
    """An operator made a new root admin with `python -m services.gateway.recover` (the root tenant's)."""

    identity_id: str = _f("the new admin identity")
    name: str = _f("its name")


class CertificateExpiring(EventData):
    """A live certificate is within `COFFER_PKI_EXPIRY_NOTICE` of its end (once per certificate)."""

    serial: str = Serial
    ca_id: str | None = _f("its CA (none for an ACME CA's certificate)")
    role: str | None = _f("its PKI role (none for an ACME CA's certificate)")
    common_name: str = _f("the subject's common name")
    not_after: str = NotAfter


class CertificateIssued(CertificateExpiring):
    """A certificate was issued, by a role, a CSR's approval, or an ACME CA."""

    acme_order_id: str | None = _f("the ACME order it completes", None)


class CertificateRevoked(EventData):
    """A certificate was revoked (its CA's CRL re-signed)."""

    serial: str = Serial
    ca_id: str | None = _f("its CA")
    reason: str = _f("the RFC 5280 reason")


class CsrChange(EventData):
    """A CSR was submitted for approval, approved (and signed) or rejected."""

    id: str = _f("the CSR's id")
    role: str = _f("the PKI role it asks under")
    subject: str | None = _f("the requested subject (on submission)", None)
    serial: str | None = _f("the certificate signed (on approval)", None)


class AcmeCompleted(EventData):
    """An ACME order got its certificate (a first one, or a renewal)."""

    order_id: str = _f("the order")
    serial: str = Serial
    domains: list[str] = _f("its names")
    not_after: str = NotAfter
    renewal: bool = _f("whether it renewed an earlier certificate")


class AcmeFailed(EventData):
    """An ACME order (or its renewal) failed."""

    order_id: str = _f("the order")
    domains: list[str] = _f("its names")
    renewal: bool = _f("whether a renewal failed (the earlier certificate still serves)")
    problem: dict[str, Any] = _f("the CA's problem: its `type` and `detail`")
    next_attempt_at: str | None = _f("when a renewal is tried again (RFC 3339)")


class LeaseChange(EventData):
    """A lease of dynamic credentials began, was renewed, revoked or expired (the credentials are not here)."""

    lease_id: str = _f("the lease")
    engine: str = _f("its engine")
    role: str = _f("its engine role")
    expires_at: str = _f("when it ends (RFC 3339)")
    max_expires_at: str | None = _f("the latest it can be renewed to (on creation)", None)


class WebhookDisabled(EventData):
    """A webhook endpoint was disabled (it answered 410, or failed for too long)."""

    webhook_id: str = _f("the webhook")
    reason: str = _f("why")


class WebhookPing(EventData):
    """A test delivery asked for with `:ping` (to that webhook only, never on the bus)."""

    webhook_id: str = _f("the webhook")


@dataclass(frozen=True)
class EventType:
    data: type[EventData]
    summary: str


def _each(types: str, data: type[EventData], summary: str) -> dict[str, EventType]:
    return {t: EventType(data, summary) for t in types.split()}


EVENT_TYPES: dict[str, EventType] = {
    "secret.created": EventType(SecretChange, "A secret's first version was written."),
    "secret.updated": EventType(SecretChange, "A secret got a new version."),
    "secret.deleted": EventType(SecretChange, "A secret was soft-deleted (restorable until its retention ends)."),
    "secret.restored": EventType(SecretChange, "A soft-deleted secret was restored."),
    "secret.purged": EventType(SecretChange, "Every version of a secret was destroyed."),
    "secret.expired": EventType(SecretChange, "A secret version's expiry passed."),
    "secret.rotated": EventType(SecretRotated, "A rotation policy gave a secret a new value."),
    "secret.rotation_failed": EventType(SecretRotationFailed, "A scheduled rotation failed."),
    "secret.versions_deleted": EventType(SecretVersionsChange, "Versions of a secret were soft-deleted."),
    "secret.versions_restored": EventType(SecretVersionsChange, "Soft-deleted versions of a secret were restored."),
    "secret.versions_destroyed": EventType(SecretVersionsChange, "Versions of a secret were destroyed."),
    "access.requested": EventType(AccessRequestChange, "Access to a policy was asked for."),
    "access.approved": EventType(AccessRequestChange, "An access request got its approvals: the grant began."),
    "access.denied": EventType(AccessRequestChange, "An access request was denied."),
    "access.cancelled": EventType(AccessRequestChange, "The requester cancelled an access request or its grant."),
    "access.revoked": EventType(AccessRequestChange, "An approver ended a grant early."),
    "access.expired": EventType(AccessRequestChange, "An access request went unanswered, or its grant ended."),
    "token.revoked": EventType(TokenRevoked, "Tokens were revoked."),
    **_each("policy.created policy.updated policy.deleted", PolicyChange, "A policy or a binding changed."),
    "tenant.deleted": EventType(TenantDeleted, "A tenant was deleted."),
    "system.maintenance": EventType(Maintenance, "Maintenance mode changed."),
    "system.sealed": EventType(SealChange, "The platform was sealed."),
    "system.root_rotated": EventType(SealChange, "The root key was rotated."),
    "system.unsealed": EventType(Unsealed, "The platform was unsealed."),
    "system.admin_recovered": EventType(AdminRecovered, "An operator recovered a root admin."),
    "certificate.issued": EventType(CertificateIssued, "A certificate was issued."),
    "certificate.revoked": EventType(CertificateRevoked, "A certificate was revoked."),
    "certificate.expiring": EventType(CertificateExpiring, "A certificate is about to expire."),
    **_each("csr.submitted csr.approved csr.rejected", CsrChange, "A CSR was submitted or decided."),
    "acme.order.completed": EventType(AcmeCompleted, "An ACME order got its certificate."),
    "acme.order.failed": EventType(AcmeFailed, "An ACME order failed."),
    **_each("lease.created lease.renewed lease.revoked lease.expired", LeaseChange, "A lease changed."),
    "webhook.disabled": EventType(WebhookDisabled, "A webhook endpoint was disabled."),
    "webhook.ping": EventType(WebhookPing, "A webhook's test delivery."),
}


def check(event_type: str, data: dict[str, Any]) -> None:
    """``internal_error`` unless ``data`` is what ``event_type``'s description says (and it has one). A type of
    no service's (``shared.registry.EVENT_OWNERS``: no consumer of the platform accepts it) is not checked:
    the bus's own tests publish such types."""
    if owner_of(event_type) is None:
        return
    described = EVENT_TYPES.get(event_type)
    if described is None:
        raise InternalError(f"event type {event_type!r} is not described (shared/contracts/event_types.py)")
    try:
        described.data.model_validate(data)
    except _PydanticError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) or "data" for e in exc.errors()})
        raise InternalError(f"event {event_type!r} disagrees with its description in {fields}") from None
