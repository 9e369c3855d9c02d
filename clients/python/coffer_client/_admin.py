"""The rest of the API (administration), and the table of every call and the method that makes it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from coffer_client._api import _Api
from coffer_client._base import _Call, _drop_none, _identity, _seg


class _AdminApi(_Api):
    """The rest of the API: identities, policies, tenants, webhooks, the PKI's administration, audit and
    operations. Results are the API's JSON objects (``dict``), as api.md describes them."""

    # -- system and operations -------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        return self._call(_Call("GET", "/v1/openapi.json"))

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


#: every call of the API and the method that makes it (a unit test holds this against the gateway's routes)
API_CALLS: dict[tuple[str, str], str] = {
    ("GET", "/v1/sys/health"): "health", ("GET", "/metrics"): "metrics", ("POST", "/v1/sys/init"): "init",
    ("POST", "/v1/sys/kms:rotate"): "rotate_kek", ("GET", "/v1/sys/maintenance"): "get_maintenance",
    ("GET", "/v1/sys/seal-status"): "seal_status", ("POST", "/v1/sys/unseal"): "unseal",
    ("POST", "/v1/sys/seal"): "seal",
    ("PUT", "/v1/sys/maintenance"): "set_maintenance", ("GET", "/v1/openapi.json"): "openapi",
    ("POST", "/v1/auth/token"): "login_client", ("GET", "/v1/auth/jwks"): "jwks",
    ("GET", "/v1/auth/whoami"): "whoami", ("POST", "/v1/auth/mfa"): "step_up",
    ("POST", "/v1/auth/revoke"): "revoke_token", ("POST", "/v1/auth/keys:rotate"): "rotate_signing_key",
    ("POST", "/v1/identities"): "create_identity", ("GET", "/v1/identities"): "list_identities",
    ("GET", "/v1/identities/{id}"): "get_identity", ("PATCH", "/v1/identities/{id}"): "update_identity",
    ("DELETE", "/v1/identities/{id}"): "delete_identity", ("POST", "/v1/identities/{id}/mfa/totp"): "enrol_totp",
    ("DELETE", "/v1/identities/{id}/mfa/totp"): "reset_totp",
    ("POST", "/v1/tenants"): "create_tenant", ("GET", "/v1/tenants"): "list_tenants",
    ("GET", "/v1/tenants/{id}"): "get_tenant", ("PATCH", "/v1/tenants/{id}"): "update_tenant",
    ("DELETE", "/v1/tenants/{id}"): "delete_tenant",
    ("POST", "/v1/policies"): "create_policy", ("GET", "/v1/policies"): "list_policies",
    ("GET", "/v1/policies/{name}"): "get_policy", ("PUT", "/v1/policies/{name}"): "put_policy",
    ("DELETE", "/v1/policies/{name}"): "delete_policy",
    ("POST", "/v1/bindings"): "create_binding", ("GET", "/v1/bindings"): "list_bindings",
    ("GET", "/v1/bindings/{id}"): "get_binding", ("DELETE", "/v1/bindings/{id}"): "delete_binding",
    ("GET", "/v1/audit/events"): "audit_events", ("POST", "/v1/audit/events:match"): "audit_match",
    ("GET", "/v1/audit/verify"): "audit_verify",
    ("GET", "/v1/secrets"): "list_secrets", ("GET", "/v1/secrets/{path}"): "get_secret",
    ("GET", "/v1/secrets/{path}:versions"): "versions", ("PUT", "/v1/secrets/{path}"): "put_secret",
    ("DELETE", "/v1/secrets/{path}"): "delete_secret", ("POST", "/v1/secrets/{path}:restore"): "restore_secret",
    ("POST", "/v1/secrets/{path}:purge"): "purge_secret", ("POST", "/v1/secrets/{path}:rotate"): "rotate_secret",
    ("POST", "/v1/webhooks"): "create_webhook", ("GET", "/v1/webhooks"): "list_webhooks",
    ("GET", "/v1/webhooks/{id}"): "get_webhook", ("PATCH", "/v1/webhooks/{id}"): "update_webhook",
    ("DELETE", "/v1/webhooks/{id}"): "delete_webhook", ("POST", "/v1/webhooks/{id}:ping"): "ping_webhook",
    ("POST", "/v1/webhooks/{id}:rotate-secret"): "rotate_webhook_secret",
    ("GET", "/v1/webhooks/{id}/deliveries"): "list_deliveries",
    ("GET", "/v1/webhooks/{id}/deliveries/{did}"): "get_delivery",
    ("POST", "/v1/webhooks/{id}/deliveries/{did}:retry"): "retry_delivery",
    ("POST", "/v1/subscriptions"): "create_subscription", ("GET", "/v1/subscriptions"): "list_subscriptions",
    ("GET", "/v1/subscriptions/{id}"): "get_subscription", ("DELETE", "/v1/subscriptions/{id}"): "delete_subscription",
    ("GET", "/v1/pki/cas/{id}/crl"): "ca_crl", ("POST", "/v1/pki/ocsp"): "ocsp",
    ("GET", "/v1/pki/ocsp/{request}"): "ocsp_get", ("POST", "/v1/pki/cas"): "create_ca",
    ("GET", "/v1/pki/cas"): "list_cas", ("GET", "/v1/pki/cas/{id}"): "get_ca",
    ("GET", "/v1/pki/cas/{id}/chain"): "ca_chain", ("DELETE", "/v1/pki/cas/{id}"): "delete_ca",
    ("GET", "/v1/pki/roles"): "list_pki_roles", ("PUT", "/v1/pki/roles/{name}"): "put_pki_role",
    ("GET", "/v1/pki/roles/{name}"): "get_pki_role", ("DELETE", "/v1/pki/roles/{name}"): "delete_pki_role",
    ("POST", "/v1/pki/roles/{name}:issue"): "issue_certificate", ("POST", "/v1/pki/roles/{name}:sign"): "sign_csr",
    ("POST", "/v1/pki/csrs"): "submit_csr", ("GET", "/v1/pki/csrs"): "list_csrs",
    ("GET", "/v1/pki/csrs/{id}"): "get_csr", ("POST", "/v1/pki/csrs/{id}:approve"): "approve_csr",
    ("POST", "/v1/pki/csrs/{id}:reject"): "reject_csr", ("GET", "/v1/pki/certificates"): "list_certificates",
    ("GET", "/v1/pki/certificates/{serial}"): "get_certificate",
    ("POST", "/v1/pki/certificates/{serial}:revoke"): "revoke_certificate",
    ("POST", "/v1/pki/trust-anchors"): "create_trust_anchor", ("GET", "/v1/pki/trust-anchors"): "list_trust_anchors",
    ("GET", "/v1/pki/trust-anchors/{id}"): "get_trust_anchor",
    ("DELETE", "/v1/pki/trust-anchors/{id}"): "delete_trust_anchor",
    ("GET", "/v1/pki/trust-bundle"): "trust_bundle",
    ("POST", "/v1/engines"): "create_engine", ("GET", "/v1/engines"): "list_engines",
    ("GET", "/v1/engines/{name}"): "get_engine", ("PATCH", "/v1/engines/{name}"): "rotate_engine_admin",
    ("DELETE", "/v1/engines/{name}"): "delete_engine", ("GET", "/v1/engines/{name}/roles"): "list_roles",
    ("PUT", "/v1/engines/{name}/roles/{role}"): "put_role", ("GET", "/v1/engines/{name}/roles/{role}"): "get_role",
    ("DELETE", "/v1/engines/{name}/roles/{role}"): "delete_role",
    ("POST", "/v1/engines/{name}/roles/{role}:credentials"): "lease_credentials",
    ("GET", "/v1/leases"): "list_leases", ("POST", "/v1/leases:revoke-prefix"): "revoke_prefix",
    ("GET", "/v1/leases/{id}"): "get_lease", ("POST", "/v1/leases/{id}:renew"): "renew_lease",
    ("POST", "/v1/leases/{id}:revoke"): "revoke_lease",
    ("POST", "/v1/secret-policies"): "create_secret_policy", ("GET", "/v1/secret-policies"): "list_secret_policies",
    ("GET", "/v1/secret-policies/{name}"): "get_secret_policy",
    ("PUT", "/v1/secret-policies/{name}"): "put_secret_policy",
    ("DELETE", "/v1/secret-policies/{name}"): "delete_secret_policy",
    ("POST", "/v1/federation/backends"): "create_federation_backend",
    ("GET", "/v1/federation/backends"): "list_federation_backends",
    ("GET", "/v1/federation/backends/{name}"): "get_federation_backend",
    ("DELETE", "/v1/federation/backends/{name}"): "delete_federation_backend",
    ("POST", "/v1/exports"): "create_export", ("GET", "/v1/exports/{id}"): "get_export",
    ("GET", "/v1/exports/{id}/bundle"): "export_bundle",
    ("POST", "/v1/rotation-policies"): "create_rotation_policy",
    ("GET", "/v1/rotation-policies"): "list_rotation_policies",
    ("GET", "/v1/rotation-policies/{name}"): "get_rotation_policy",
    ("PUT", "/v1/rotation-policies/{name}"): "put_rotation_policy",
    ("DELETE", "/v1/rotation-policies/{name}"): "delete_rotation_policy",
}
