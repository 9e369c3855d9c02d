"""The rest of the API (administration); the table of every call and the method that makes it is in ``_calls``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from coffer_client._access import _AccessApi
from coffer_client._base import _Call, _drop_none, _identity, _seg
from coffer_client._calls import API_CALLS

__all__ = ["API_CALLS", "_AdminApi"]


class _AdminApi(_AccessApi):
    """The rest of the API: identities, policies, tenants, webhooks, the PKI's administration, audit and
    operations. Results are the API's JSON objects (``dict``), as api.md describes them."""

    # -- system and operations -------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        return self._call(_Call("GET", "/v1/openapi.json"))

    def asyncapi(self) -> dict[str, Any]:
        """The AsyncAPI 3.0 description of every event type (``GET /v1/asyncapi.json``)."""
        return self._call(_Call("GET", "/v1/asyncapi.json"))

    def metrics(self) -> str:
        """Prometheus text (``GET /metrics``)."""
        return self._call(_Call("GET", "/metrics", text=True))

    def get_maintenance(self) -> dict[str, Any]:
        return self._call(_Call("GET", "/v1/sys/maintenance"))

    def set_maintenance(self, enabled: bool, message: str | None = None) -> dict[str, Any]:
        return self._call(_Call("PUT", "/v1/sys/maintenance", _drop_none({"enabled": enabled, "message": message})))

    def seal_status(self) -> dict[str, Any]:
        """``{sealed, type, progress, threshold, …}``: no token needed, answered while sealed too."""
        return self._call(_Call("GET", "/v1/sys/seal-status"))

    def unseal(self, share: str) -> dict[str, Any]:
        """Give one unseal share (the ``shamir`` seal): ``{sealed, progress, threshold}``; no token needed."""
        return self._call(_Call("POST", "/v1/sys/unseal", {"share": share}))

    def seal(self) -> dict[str, Any]:
        """Seal the platform again (root admins): every call but the seal's answers 503 until it is unsealed."""
        return self._call(_Call("POST", "/v1/sys/seal"))

    def rotate_root(self, secret_shares: int | None = None, secret_threshold: int | None = None) -> dict[str, Any]:
        """A new root key from the seal (root admins); with shamir, new ``unseal_shares`` (shown once)."""
        body = {k: v for k, v in (("secret_shares", secret_shares), ("secret_threshold", secret_threshold))
                if v is not None}
        return self._call(_Call("POST", "/v1/sys/rotate-root", json=body))

    def rotate_kek(self) -> dict[str, Any]:
        """A new key-encryption key; every data key re-wrapped (root admins)."""
        return self._call(_Call("POST", "/v1/sys/kms:rotate"))

    def rotate_signing_key(self) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/auth/keys:rotate"))

    def jwks(self) -> dict[str, Any]:
        return self._call(_Call("GET", "/v1/auth/jwks"))

    def audit_events(self, *, page_size: int = 100, **query: Any) -> Iterator[dict[str, Any]]:
        """The audit log (``since``, ``until``, ``identity_id``, ``action`` … as api.md names them)."""
        return self._list(_Call("GET", "/v1/audit/events", params={**query, "limit": page_size}), _identity)

    def audit_match(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/audit/events:match", body))

    def audit_verify(self) -> dict[str, Any]:
        return self._call(_Call("GET", "/v1/audit/verify"))

    # -- identities, MFA -------------------------------------------------------------------------------

    def create_identity(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{name, kind, allowed_scopes, password?}``: a service identity's client secret is in this answer only."""
        return self._call(_Call("POST", "/v1/identities", body))

    def list_identities(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/identities", params={"limit": page_size}), _identity)

    def get_identity(self, identity_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/identities/{_seg(identity_id)}"))

    def update_identity(self, identity_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("PATCH", f"/v1/identities/{_seg(identity_id)}", body))

    def delete_identity(self, identity_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/identities/{_seg(identity_id)}"))

    def enrol_totp(self, identity_id: str) -> dict[str, Any]:
        """``{otpauth_uri}``, shown once."""
        return self._call(_Call("POST", f"/v1/identities/{_seg(identity_id)}/mfa/totp"))

    def reset_totp(self, identity_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/identities/{_seg(identity_id)}/mfa/totp"))

    # -- auth methods and their roles ----------------------------------------------------------------

    def create_auth_method(self, name: str, config: dict[str, Any], *, type: str = "jwt") -> dict[str, Any]:  # noqa: A002
        """``config``: ``{issuer, jwks_url? | public_keys?, audiences?, leeway?}``; the keys are fetched now."""
        return self._call(_Call("POST", "/v1/auth/methods", {"name": name, "type": type, "config": config}))

    def list_auth_methods(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/auth/methods", params={"limit": page_size}), _identity)

    def get_auth_method(self, name: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/auth/methods/{_seg(name)}"))

    def update_auth_method(self, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7396) of the method's ``config``."""
        return self._call(_Call("PATCH", f"/v1/auth/methods/{_seg(name)}", {"config": config}))

    def delete_auth_method(self, name: str) -> None:
        return self._call(_Call("DELETE", f"/v1/auth/methods/{_seg(name)}"))

    def put_auth_role(self, method: str, role: str, body: dict[str, Any]) -> dict[str, Any]:
        """``{bound_audiences?, bound_subject?, bound_claims?, user_claim?, groups_claim?, scopes, policies?,
        ttl?}``."""
        return self._call(_Call("PUT", f"/v1/auth/methods/{_seg(method)}/roles/{_seg(role)}", body))

    def list_auth_roles(self, method: str, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", f"/v1/auth/methods/{_seg(method)}/roles", params={"limit": page_size}),
                          _identity)

    def get_auth_role(self, method: str, role: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/auth/methods/{_seg(method)}/roles/{_seg(role)}"))

    def delete_auth_role(self, method: str, role: str) -> None:
        return self._call(_Call("DELETE", f"/v1/auth/methods/{_seg(method)}/roles/{_seg(role)}"))

    # -- tenants -----------------------------------------------------------------------------------

    def create_tenant(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/tenants", body))

    def list_tenants(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/tenants", params={"limit": page_size}), _identity)

    def get_tenant(self, tenant_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/tenants/{_seg(tenant_id)}"))

    def update_tenant(self, tenant_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7396)."""
        return self._call(_Call("PATCH", f"/v1/tenants/{_seg(tenant_id)}", patch))

    def delete_tenant(self, tenant_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/tenants/{_seg(tenant_id)}"))

    # -- policies and bindings -----------------------------------------------------------------------

    def create_policy(self, name: str, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/policies", {"name": name, "rules": rules, **extra}))

    def list_policies(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/policies", params={"limit": page_size}), _identity)

    def get_policy(self, name: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/policies/{_seg(name)}"))

    def put_policy(self, name: str, rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return self._call(_Call("PUT", f"/v1/policies/{_seg(name)}", {"rules": rules, **extra}))

    def delete_policy(self, name: str) -> None:
        return self._call(_Call("DELETE", f"/v1/policies/{_seg(name)}"))

    def create_binding(self, policy: str, identity_id: str) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/bindings", {"policy": policy, "identity_id": identity_id}))

    def list_bindings(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/bindings", params={"limit": page_size}), _identity)

    def get_binding(self, binding_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/bindings/{_seg(binding_id)}"))

    def delete_binding(self, binding_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/bindings/{_seg(binding_id)}"))

    # -- webhooks and subscriptions --------------------------------------------------------------------

    def create_webhook(self, url: str, **extra: Any) -> dict[str, Any]:
        """The answer holds the signing secret (``whsec_…``), shown here only."""
        return self._call(_Call("POST", "/v1/webhooks", {"url": url, **extra}))

    def list_webhooks(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/webhooks", params={"limit": page_size}), _identity)

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/webhooks/{_seg(webhook_id)}"))

    def update_webhook(self, webhook_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("PATCH", f"/v1/webhooks/{_seg(webhook_id)}", body))

    def delete_webhook(self, webhook_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/webhooks/{_seg(webhook_id)}"))

    def ping_webhook(self, webhook_id: str) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/webhooks/{_seg(webhook_id)}:ping"))

    def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/webhooks/{_seg(webhook_id)}:rotate-secret"))

    def list_deliveries(self, webhook_id: str, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", f"/v1/webhooks/{_seg(webhook_id)}/deliveries", params={"limit": page_size}),
                          _identity)

    def get_delivery(self, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/webhooks/{_seg(webhook_id)}/deliveries/{_seg(delivery_id)}"))

    def retry_delivery(self, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/webhooks/{_seg(webhook_id)}/deliveries/{_seg(delivery_id)}:retry"))

    def create_subscription(self, webhook_id: str, event_types: list[str], **extra: Any) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/subscriptions",
                                {"webhook_id": webhook_id, "event_types": event_types, **extra}))

    def list_subscriptions(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/subscriptions", params={"limit": page_size}), _identity)

    def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/subscriptions/{_seg(subscription_id)}"))

    def delete_subscription(self, subscription_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/subscriptions/{_seg(subscription_id)}"))

    # -- secret policies ----------------------------------------------------------------------------------

    def create_secret_policy(self, name: str, path_pattern: str, **rules: Any) -> dict[str, Any]:
        """Rules every write under ``path_pattern`` must keep: ``allowed_types``, ``require_expiry``,
        ``max_ttl``, ``min_length``."""
        return self._call(_Call("POST", "/v1/secret-policies", {"name": name, "path_pattern": path_pattern, **rules}))

    def list_secret_policies(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/secret-policies", params={"limit": page_size}), _identity)

    def get_secret_policy(self, name: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/secret-policies/{_seg(name)}"))

    def put_secret_policy(self, name: str, path_pattern: str, **rules: Any) -> dict[str, Any]:
        return self._call(_Call("PUT", f"/v1/secret-policies/{_seg(name)}", {"path_pattern": path_pattern, **rules}))

    def delete_secret_policy(self, name: str) -> None:
        return self._call(_Call("DELETE", f"/v1/secret-policies/{_seg(name)}"))

    # -- federation backends ------------------------------------------------------------------------------

    def create_federation_backend(self, name: str, type: str, mount_path: str,  # noqa: A002
                                  config: dict[str, Any]) -> dict[str, Any]:
        """Mount another store (``coffer`` or ``aws_secrets_manager``) at ``mount_path``, read-only."""
        return self._call(_Call("POST", "/v1/federation/backends", {"name": name, "type": type,
                                                                    "mount_path": mount_path, "config": config}))

    def list_federation_backends(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/federation/backends", params={"limit": page_size}), _identity)

    def get_federation_backend(self, name: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/federation/backends/{_seg(name)}"))

    def delete_federation_backend(self, name: str) -> None:
        return self._call(_Call("DELETE", f"/v1/federation/backends/{_seg(name)}"))

    # -- rotation policies --------------------------------------------------------------------------------

    def create_rotation_policy(self, name: str, path_pattern: str, interval: str,
                               generator: dict[str, Any]) -> dict[str, Any]:
        """Secrets under ``path_pattern`` get a generated value every ``interval``;
        ``generator`` = ``{type: password|api_key, length?, charset?}``."""
        return self._call(_Call("POST", "/v1/rotation-policies", {"name": name, "path_pattern": path_pattern,
                                                                  "interval": interval, "generator": generator}))

    def list_rotation_policies(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/rotation-policies", params={"limit": page_size}), _identity)

    def get_rotation_policy(self, name: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/rotation-policies/{_seg(name)}"))

    def put_rotation_policy(self, name: str, path_pattern: str, interval: str,
                            generator: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("PUT", f"/v1/rotation-policies/{_seg(name)}", {
            "path_pattern": path_pattern, "interval": interval, "generator": generator}))

    def delete_rotation_policy(self, name: str) -> None:
        return self._call(_Call("DELETE", f"/v1/rotation-policies/{_seg(name)}"))

    # -- the PKI's administration ------------------------------------------------------------------------

    def create_ca(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/pki/cas", body))

    def list_cas(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/cas", params={"limit": page_size}), _identity)

    def get_ca(self, ca_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/cas/{_seg(ca_id)}"))

    def ca_chain(self, ca_id: str) -> str:
        """The CA's certificate and its parents', PEM."""
        return self._call(_Call("GET", f"/v1/pki/cas/{_seg(ca_id)}/chain", text=True))

    def ca_crl(self, ca_id: str, *, pem: bool = False) -> bytes | str:
        """The CA's current CRL: DER, or PEM text with ``pem=True``."""
        return self._call(_Call("GET", f"/v1/pki/cas/{_seg(ca_id)}/crl", text=True,
                                headers={"Accept": "application/x-pem-file"} if pem else {}))

    def delete_ca(self, ca_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/pki/cas/{_seg(ca_id)}"))

    def ocsp(self, request_der: bytes) -> bytes:
        """An OCSP response (DER) for an OCSP request (DER), by POST."""
        return self._call(_Call("POST", "/v1/pki/ocsp", content=request_der, text=True,
                                headers={"Content-Type": "application/ocsp-request"}))

    def ocsp_get(self, request_b64: str) -> bytes:
        """The same by GET, the request base64-encoded in the path (RFC 6960 A.1)."""
        return self._call(_Call("GET", f"/v1/pki/ocsp/{quote(request_b64, safe='')}", text=True))

    def list_pki_roles(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/roles", params={"limit": page_size}), _identity)

    def put_pki_role(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("PUT", f"/v1/pki/roles/{_seg(name)}", body))

    def get_pki_role(self, name: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/roles/{_seg(name)}"))

    def delete_pki_role(self, name: str) -> None:
        return self._call(_Call("DELETE", f"/v1/pki/roles/{_seg(name)}"))

    def sign_csr(self, role: str, csr_pem: str, ttl: str | None = None) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/pki/roles/{_seg(role)}:sign", _drop_none({"csr": csr_pem, "ttl": ttl})))

    def submit_csr(self, role: str, csr_pem: str) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/pki/csrs", {"csr": csr_pem, "role": role}))

    def list_csrs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/csrs", params={"status": status, "limit": page_size}), _identity)

    def get_csr(self, csr_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/csrs/{_seg(csr_id)}"))

    def approve_csr(self, csr_id: str) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/pki/csrs/{_seg(csr_id)}:approve"))

    def reject_csr(self, csr_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/pki/csrs/{_seg(csr_id)}:reject", _drop_none({"reason": reason})))

    def list_certificates(self, *, ca_id: str | None = None, expiring_within: str | None = None,
                          page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/certificates", params={
            "ca_id": ca_id, "expiring_within": expiring_within, "limit": page_size}), _identity)

    def get_certificate(self, serial: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/certificates/{_seg(serial)}"))

    def revoke_certificate(self, serial: str, reason: str | None = None) -> dict[str, Any]:
        return self._call(_Call("POST", f"/v1/pki/certificates/{_seg(serial)}:revoke",
                                _drop_none({"reason": reason})))

    def create_trust_anchor(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("POST", "/v1/pki/trust-anchors", body))

    def list_trust_anchors(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/trust-anchors", params={"limit": page_size}), _identity)

    def get_trust_anchor(self, anchor_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/trust-anchors/{_seg(anchor_id)}"))

    def delete_trust_anchor(self, anchor_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/pki/trust-anchors/{_seg(anchor_id)}"))

    def trust_bundle(self) -> str:
        """The tenant's roots and trust anchors, PEM."""
        return self._call(_Call("GET", "/v1/pki/trust-bundle", text=True))
