"""Every code of the stable vocabulary (``../shared/seed/error-codes.md``).

One class per code; the first line of its docstring is the code's meaning and
``status`` is its HTTP status. ``docs/error-codes.md`` is generated from this
module (``python -m shared.errors``). Adding a code here is a contract change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ._base import CofferError


class AuthenticationError(CofferError):
    """Authentication / authorization."""

    status = 401
    section = "Authentication / authorization"


class AuthenticationRequired(AuthenticationError):
    """Missing Authorization header."""

    code = "authentication_required"


class TokenExpired(AuthenticationError):
    """Token `exp` passed."""

    code = "token_expired"


class TokenInvalid(AuthenticationError):
    """Signature failed."""

    code = "token_invalid"


class TokenRevoked(AuthenticationError):
    """Explicitly revoked."""

    code = "token_revoked"


class AuthorizationError(CofferError):
    """Authentication / authorization."""

    status = 403
    section = "Authentication / authorization"


class AccessDenied(AuthorizationError):
    """No matching policy rule."""

    code = "access_denied"


class InsufficientScope(AuthorizationError):
    """Token scope too narrow."""

    code = "insufficient_scope"


class MfaRequired(AuthorizationError):
    """Rule requires fresh MFA."""

    code = "mfa_required"


class IpNotAllowed(AuthorizationError):
    """IP outside allowed ranges."""

    code = "ip_not_allowed"


class TimeWindowViolation(AuthorizationError):
    """Outside time window."""

    code = "time_window_violation"


class TenantAccessDenied(AuthorizationError):
    """Cross-tenant without partner admin."""

    code = "tenant_access_denied"


class Forbidden(AuthorizationError):
    """Generic authorization failure."""

    code = "forbidden"


class ValidationFailed(CofferError):
    """Validation."""

    status = 400
    section = "Validation"


class InvalidRequest(ValidationFailed):
    """Malformed JSON or shape."""

    code = "invalid_request"


class InvalidPath(ValidationFailed):
    """Path format violation."""

    code = "invalid_path"


class InvalidSecretType(ValidationFailed):
    """Unknown secret_type."""

    code = "invalid_secret_type"


class InvalidDuration(ValidationFailed):
    """Duration string didn't parse."""

    code = "invalid_duration"


class InvalidCursor(ValidationFailed):
    """Cursor expired or malformed."""

    code = "invalid_cursor"


class InvalidPolicy(ValidationFailed):
    """Policy rules/bindings invalid."""

    code = "invalid_policy"


class InvalidGlob(ValidationFailed):
    """Path pattern not a valid glob."""

    code = "invalid_glob"


class InvalidRole(ValidationFailed):
    """Role name invalid."""

    code = "invalid_role"


class InvalidConfig(ValidationFailed):
    """Engine/backend config rejected."""

    code = "invalid_config"


class ValidationError(ValidationFailed):
    """Field-level validation; see `details.fields`."""

    code = "validation_error"
    status = 422

    @classmethod
    def on(cls, field: str, message: str, **details: Any) -> ValidationError:
        """The error of one field: ``details.fields = [{field, message}]`` (never the value)."""
        return cls("request validation failed", details={"fields": [{"field": field, "message": message}], **details})


class NotFound(CofferError):
    """Not found."""

    status = 404
    section = "Not found"


class SecretNotFound(NotFound):
    """Secret not found."""

    code = "secret_not_found"


class VersionNotFound(NotFound):
    """Version not found."""

    code = "version_not_found"


class PolicyNotFound(NotFound):
    """Policy not found."""

    code = "policy_not_found"


class BindingNotFound(NotFound):
    """Binding not found."""

    code = "binding_not_found"


class WebhookNotFound(NotFound):
    """Webhook not found."""

    code = "webhook_not_found"


class SubscriptionNotFound(NotFound):
    """Subscription not found."""

    code = "subscription_not_found"


class RotationPolicyNotFound(NotFound):
    """Rotation policy not found."""

    code = "rotation_policy_not_found"


class SecretPolicyNotFound(NotFound):
    """Secret policy not found."""

    code = "secret_policy_not_found"


class CaNotFound(NotFound):
    """Ca not found."""

    code = "ca_not_found"


class CertificateNotFound(NotFound):
    """Certificate not found."""

    code = "certificate_not_found"


class CsrNotFound(NotFound):
    """Csr not found."""

    code = "csr_not_found"


class TrustAnchorNotFound(NotFound):
    """Trust anchor not found."""

    code = "trust_anchor_not_found"


class AcmeAccountNotFound(NotFound):
    """Acme account not found."""

    code = "acme_account_not_found"


class AcmeOrderNotFound(NotFound):
    """Acme order not found."""

    code = "acme_order_not_found"


class DnsProviderNotFound(NotFound):
    """Dns provider not found."""

    code = "dns_provider_not_found"


class EngineNotFound(NotFound):
    """Engine not found."""

    code = "engine_not_found"


class RoleNotFound(NotFound):
    """Role not found."""

    code = "role_not_found"


class LeaseNotFound(NotFound):
    """Lease not found."""

    code = "lease_not_found"


class TenantNotFound(NotFound):
    """Tenant not found."""

    code = "tenant_not_found"


class IdentityNotFound(NotFound):
    """Identity not found."""

    code = "identity_not_found"


class FederationBackendNotFound(NotFound):
    """Federation backend not found."""

    code = "federation_backend_not_found"


class ExportNotFound(NotFound):
    """Export not found."""

    code = "export_not_found"


class Conflict(CofferError):
    """Conflict / state."""

    status = 409
    section = "Conflict / state"


class SecretExists(Conflict):
    """Soft-deleted path in retention."""

    code = "secret_exists"


class VersionConflict(Conflict):
    """Concurrent modification."""

    code = "version_conflict"


class PolicyInUse(Conflict):
    """Policy has bindings."""

    code = "policy_in_use"


class EngineInUse(Conflict):
    """Engine has leases."""

    code = "engine_in_use"


class CaHasCertificates(Conflict):
    """CA has issued certs."""

    code = "ca_has_certificates"


class NameConflict(Conflict):
    """Name already taken."""

    code = "name_conflict"


class BindingConflict(Conflict):
    """Identity already bound."""

    code = "binding_conflict"


class SecretExpired(Conflict):
    """`expires_at` passed."""

    code = "secret_expired"
    status = 410


class LeaseExpired(Conflict):
    """Lease already expired."""

    code = "lease_expired"
    status = 410


class Throttled(CofferError):
    """Rate limit / quota / availability."""

    status = 429
    section = "Rate limit / quota / availability"
    #: seconds a 429 tells the caller to wait when the raiser knows no better
    #: figure (a count quota frees only when something is deleted).
    default_retry_after: ClassVar[int] = 60

    def __init__(self, message: str | None = None, *, details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message, details=details, headers=headers)
        self.headers.setdefault("Retry-After", str(self.default_retry_after))  # every 429 carries one


class RateLimited(Throttled):
    """Caller-specific rate limit."""

    code = "rate_limited"
    retryable = True


class QuotaExceeded(Throttled):
    """Hard tenant quota."""

    code = "quota_exceeded"


class Unavailable(CofferError):
    """Rate limit / quota / availability."""

    status = 503
    section = "Rate limit / quota / availability"


class ServiceUnavailable(Unavailable):
    """Transient dependency outage."""

    code = "service_unavailable"
    retryable = True


class FeatureDisabled(Unavailable):
    """Feature gated off at deploy."""

    code = "feature_disabled"


class MaintenanceMode(Unavailable):
    """Operator-scheduled downtime."""

    code = "maintenance_mode"
    retryable = True


class ServerError(CofferError):
    """Server / backend."""

    status = 500
    section = "Server / backend"


class InternalError(ServerError):
    """Unexpected server error."""

    code = "internal_error"


class EncryptionError(ServerError):
    """KMS interaction failed."""

    code = "encryption_error"


class StorageError(ServerError):
    """Database or object store error."""

    code = "storage_error"
    retryable = True


class UpstreamError(CofferError):
    """Server / backend."""

    status = 502
    section = "Server / backend"


class BackendError(UpstreamError):
    """Federated backend or ACME upstream failed."""

    code = "backend_error"
    retryable = True


class BackendRateLimited(UpstreamError):
    """Federated/ACME backend rate-limited us."""

    code = "backend_rate_limited"
    retryable = True


class BackendTimeout(UpstreamError):
    """Federated backend timeout."""

    code = "backend_timeout"
    status = 504
    retryable = True


class PkiRequestError(CofferError):
    """Dynamic / PKI specific."""

    status = 400
    section = "Dynamic / PKI specific"


class TtlExceedsMax(PkiRequestError):
    """Requested TTL > role max_ttl."""

    code = "ttl_exceeds_max"


class DomainNotAllowed(PkiRequestError):
    """CN/SAN not in role's allowed_domains."""

    code = "domain_not_allowed"


class KeyTypeMismatch(PkiRequestError):
    """CSR key doesn't match role requirement."""

    code = "key_type_mismatch"


class CsrInvalid(PkiRequestError):
    """CSR failed to parse."""

    code = "csr_invalid"


class CsrAlreadyProcessed(PkiRequestError):
    """CSR already signed or rejected."""

    code = "csr_already_processed"
    status = 409


class AcmeOrderFailed(PkiRequestError):
    """ACME upstream rejected order."""

    code = "acme_order_failed"
    status = 502
    retryable = True


class EngineUnreachable(PkiRequestError):
    """Can't reach backend system."""

    code = "engine_unreachable"
    status = 502
    retryable = True


class WebhookError(CofferError):
    """Webhook delivery."""

    status = 400
    section = "Webhook delivery"


class WebhookUrlInvalid(WebhookError):
    """URL can't be used (private IP blocked, etc.)."""

    code = "webhook_url_invalid"


class WebhookDeliveryFailed(WebhookError):
    """Non-2xx from destination."""

    code = "webhook_delivery_failed"
    status = 502
    retryable = True


class WebhookDeliveryTimeout(WebhookError):
    """> 10s response time."""

    code = "webhook_delivery_timeout"
    status = 504
    retryable = True
