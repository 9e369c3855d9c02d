"""``Client`` (sync) and ``AsyncClient`` (asyncio): one method per API call, on httpx.

Both share ``_Api``: each method describes its call (``_Call``) and how to read
the answer; ``Client._call`` runs it at once, ``AsyncClient._call`` returns a
coroutine — so ``AsyncClient`` has the same methods, awaited, and its lists are
async iterators. Lists follow ``next_cursor`` to the last page.

Retries: a 429 is retried after its ``Retry-After``; a 503 too, for GET, PUT
and DELETE only (a POST that timed out behind the gateway may have been done:
it is not repeated). At most ``retries`` more tries (2: three in all), and only
when the wait the server asks for is at most ``max_wait`` seconds; otherwise
the error is raised at once, ``retry_after`` on it. ``retries=0``: never.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from coffer_client.errors import CofferError, from_response
from coffer_client.models import Engine, Issued, Lease, LeaseCredentials, Secret, SecretMeta, Token

DEFAULT_ADDR = "http://127.0.0.1:8700"
VERSION = "0.1.0"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def _identity(body: Any) -> Any:
    return body


def _seg(text: str) -> str:
    return quote(text, safe="")


def _secret_path(path: str) -> str:
    return quote(path.strip("/"), safe="/")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    convert: Callable[[Any], Any] = _identity
    #: statuses besides 2xx whose body is the answer (health's 503 with its report)
    answers: tuple[int, ...] = ()
    #: the body as text (PEM, Prometheus), not JSON
    text: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    #: a body sent as it is (DER), not as JSON
    content: bytes | None = None


class _Base:
    def __init__(self, addr: str | None = None, token: str | None = None, *, tenant: str | None = None,
                 retries: int = 2, max_wait: float = 10.0, timeout: float = 30.0) -> None:
        self.addr = (addr or os.environ.get("COFFER_ADDR") or DEFAULT_ADDR).rstrip("/")
        self.token = token if token is not None else os.environ.get("COFFER_TOKEN") or None
        self.tenant = tenant if tenant is not None else os.environ.get("COFFER_TENANT") or None
        self.retries = max(0, retries)
        self.max_wait = max_wait
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"coffer-client/{VERSION}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.tenant:
            headers["X-Tenant-ID"] = self.tenant
        return headers

    def _request(self, call: _Call) -> dict[str, Any]:
        return {"method": call.method, "url": self.addr + call.path, "json": call.json, "content": call.content,
                "params": _drop_none(call.params) or None, "headers": {**self._headers(), **call.headers}}

    def _read(self, call: _Call, response: httpx.Response, attempt: int) -> tuple[float | None, Any]:
        """``(wait, None)`` to try again after ``wait`` s; else ``(None, result)`` (or it raises)."""
        if response.is_success or response.status_code in call.answers:
            if response.status_code == 204 or not response.content:
                return None, call.convert(None)
            if call.text:
                return None, call.convert(response.text if response.headers.get("content-type", "").startswith(
                    ("text/", "application/x-pem-file", "application/json")) else response.content)
            return None, call.convert(response.json())
        retry_after = _retry_after(response)
        if attempt < self.retries and (response.status_code == 429 or (
                response.status_code == 503 and call.method in _IDEMPOTENT)):
            wait = retry_after if retry_after is not None else min(2.0 ** attempt, self.max_wait)
            if wait <= self.max_wait:
                return wait, None
        try:
            body = response.json()
        except ValueError:
            body = None
        raise from_response(response.status_code, body, response.headers.get("X-Request-ID"), retry_after)

    def _page_call(self, call: _Call, cursor: str | None) -> _Call:
        return _Call(call.method, call.path, call.json, {**call.params, "cursor": cursor})


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


class _Api:
    """Every API call the client offers, described once for both clients."""

    def _call(self, call: _Call) -> Any:
        raise NotImplementedError

    def _list(self, call: _Call, convert: Callable[[Any], Any]) -> Any:
        raise NotImplementedError

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Any call of the API by path (``/v1/...``): its JSON answer."""
        return self._call(_Call(method.upper(), path, json, params or {}))

    # -- system and tokens ---------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``{status: ok|degraded, services: {...}}`` (a degraded platform answers too, not an error)."""
        return self._call(_Call("GET", "/v1/sys/health", answers=(503,)))

    def init(self) -> dict[str, Any]:
        """Once, on an empty system: the root tenant, its admin's client id and secret, and a token."""
        return self._call(_Call("POST", "/v1/sys/init"))

    def login_client(self, client_id: str, client_secret: str, scopes: list[str] | None = None) -> Token:
        """A token from client credentials; the client uses it from now on."""
        return self._call(_Call("POST", "/v1/auth/token", _drop_none(
            {"client_id": client_id, "client_secret": client_secret, "scopes": scopes}), convert=self._use_token))

    def login_password(self, username: str, password: str, *, tenant_id: str | None = None,
                       totp_code: str | None = None, scopes: list[str] | None = None) -> Token:
        """A token for a user (``tenant_id`` left out: the root tenant's users)."""
        return self._call(_Call("POST", "/v1/auth/token", _drop_none(
            {"username": username, "password": password, "tenant_id": tenant_id, "totp_code": totp_code,
             "scopes": scopes}), convert=self._use_token))

    def step_up(self, totp_code: str) -> Token:
        """A fresh token proving a second factor now (``mfa_at``)."""
        return self._call(_Call("POST", "/v1/auth/mfa", {"totp_code": totp_code}, convert=self._use_token))

    def whoami(self) -> dict[str, Any]:
        return self._call(_Call("GET", "/v1/auth/whoami"))

    def revoke_token(self, token: str | None = None) -> None:
        """Revoke a token (this client's own by default)."""
        return self._call(_Call("POST", "/v1/auth/revoke", {"token": token or self.token}))  # type: ignore[attr-defined]

    def _use_token(self, body: Any) -> Token:
        token = Token.from_dict(body)
        self.token = token.access_token  # type: ignore[attr-defined]
        return token

    # -- secrets ---------------------------------------------------------------------------------

    def get_secret(self, path: str, version: int | None = None) -> Secret:
        return self._call(_Call("GET", f"/v1/secrets/{_secret_path(path)}", params={"version": version},
                                convert=Secret.from_dict))

    def put_secret(self, path: str, value: Any, *, secret_type: str | None = None,
                   metadata: dict[str, str] | None = None, ttl: str | None = None, expires_at: str | None = None,
                   expected_version: int | None = None) -> SecretMeta:
        """A new version (``expected_version``: only if that is the current one; 0: create only)."""
        return self._call(_Call("PUT", f"/v1/secrets/{_secret_path(path)}", _drop_none(
            {"value": value, "secret_type": secret_type, "metadata": metadata, "ttl": ttl, "expires_at": expires_at,
             "expected_version": expected_version}), convert=SecretMeta.from_dict))

    def list_secrets(self, prefix: str = "", *, page_size: int = 100) -> Iterator[SecretMeta]:
        """Every live secret under ``prefix`` the caller may list, page after page, in path order."""
        return self._list(_Call("GET", "/v1/secrets", params={"prefix": prefix, "limit": page_size}),
                          SecretMeta.from_dict)

    def versions(self, path: str, *, page_size: int = 100) -> Iterator[SecretMeta]:
        """A secret's versions, newest first."""
        return self._list(_Call("GET", f"/v1/secrets/{_secret_path(path)}:versions", params={"limit": page_size}),
                          SecretMeta.from_dict)

    def delete_secret(self, path: str) -> None:
        """Soft delete (restorable until its ``purge_after``)."""
        return self._call(_Call("DELETE", f"/v1/secrets/{_secret_path(path)}"))

    def restore_secret(self, path: str) -> SecretMeta:
        return self._call(_Call("POST", f"/v1/secrets/{_secret_path(path)}:restore", convert=SecretMeta.from_dict))

    def purge_secret(self, path: str) -> None:
        """Destroy every version now."""
        return self._call(_Call("POST", f"/v1/secrets/{_secret_path(path)}:purge"))

    # -- PKI -------------------------------------------------------------------------------------

    def issue_certificate(self, role: str, common_name: str, *, alt_names: list[str] | None = None,
                          ip_sans: list[str] | None = None, ttl: str | None = None) -> Issued:
        """A key made by the PKI and its certificate (the key is in this answer only)."""
        return self._call(_Call("POST", f"/v1/pki/roles/{_seg(role)}:issue", _drop_none(
            {"common_name": common_name, "alt_names": alt_names, "ip_sans": ip_sans, "ttl": ttl}),
            convert=Issued.from_dict))

    # -- dynamic credentials ---------------------------------------------------------------------

    def create_engine(self, name: str, type: str, config: dict[str, Any]) -> Engine:
        return self._call(_Call("POST", "/v1/engines", {"name": name, "type": type, "config": config},
                                convert=Engine.from_dict))

    def get_engine(self, name: str) -> Engine:
        return self._call(_Call("GET", f"/v1/engines/{_seg(name)}", convert=Engine.from_dict))

    def list_engines(self, *, page_size: int = 100) -> Iterator[Engine]:
        return self._list(_Call("GET", "/v1/engines", params={"limit": page_size}), Engine.from_dict)

    def rotate_engine_admin(self, name: str) -> Engine:
        """A new admin password set in the target and kept only by Coffer."""
        return self._call(_Call("PATCH", f"/v1/engines/{_seg(name)}", {"rotate_admin_password": True},
                                convert=Engine.from_dict))

    def delete_engine(self, name: str) -> None:
        return self._call(_Call("DELETE", f"/v1/engines/{_seg(name)}"))

    def put_role(self, engine: str, role: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call(_Call("PUT", f"/v1/engines/{_seg(engine)}/roles/{_seg(role)}", body))

    def get_role(self, engine: str, role: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/engines/{_seg(engine)}/roles/{_seg(role)}"))

    def list_roles(self, engine: str, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", f"/v1/engines/{_seg(engine)}/roles", params={"limit": page_size}), _identity)

    def delete_role(self, engine: str, role: str) -> None:
        return self._call(_Call("DELETE", f"/v1/engines/{_seg(engine)}/roles/{_seg(role)}"))

    def lease_credentials(self, engine: str, role: str, ttl: str | None = None) -> LeaseCredentials:
        """A user made in the target now, and its lease (the password is in this answer only)."""
        return self._call(_Call("POST", f"/v1/engines/{_seg(engine)}/roles/{_seg(role)}:credentials",
                                _drop_none({"ttl": ttl}), convert=LeaseCredentials.from_dict))

    def get_lease(self, lease_id: str) -> Lease:
        return self._call(_Call("GET", f"/v1/leases/{_seg(lease_id)}", convert=Lease.from_dict))

    def list_leases(self, *, engine: str | None = None, role: str | None = None,
                    page_size: int = 100) -> Iterator[Lease]:
        return self._list(_Call("GET", "/v1/leases", params={"engine": engine, "role": role, "limit": page_size}),
                          Lease.from_dict)

    def renew_lease(self, lease_id: str, increment: str | None = None) -> Lease:
        return self._call(_Call("POST", f"/v1/leases/{_seg(lease_id)}:renew", _drop_none({"increment": increment}),
                                convert=Lease.from_dict))

    def revoke_lease(self, lease_id: str) -> None:
        """The lease's user removed from its target and its sessions ended (``engine_unreachable`` while
        the target is down: Coffer keeps trying)."""
        return self._call(_Call("POST", f"/v1/leases/{_seg(lease_id)}:revoke", convert=lambda _: None))

    def revoke_prefix(self, engine: str, role: str | None = None) -> int:
        """Every active lease of the engine (and role) revoked in the background; how many."""
        return self._call(_Call("POST", "/v1/leases:revoke-prefix", _drop_none({"engine": engine, "role": role}),
                                convert=lambda body: int(body["revoking"])))


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
    ("POST", "/v1/secrets/{path}:purge"): "purge_secret",
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
}


class Client(_Base, _AdminApi):
    """Coffer over HTTP, synchronously. ``Client(addr, token)``; both default to ``COFFER_ADDR`` /
    ``COFFER_TOKEN`` (and ``COFFER_TENANT`` for ``X-Tenant-ID``)."""

    def __init__(self, addr: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        super().__init__(addr, token, **kwargs)
        self._http = httpx.Client(timeout=self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, call: _Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(**self._request(call))
            except httpx.HTTPError as exc:
                raise CofferError(f"cannot reach {self.addr}: {type(exc).__name__}", status=0) from None
            wait, result = self._read(call, response, attempt)
            if wait is None:
                return result
            time.sleep(wait)
            attempt += 1

    def _list(self, call: _Call, convert: Callable[[Any], Any]) -> Iterator[Any]:
        cursor = None
        while True:
            page = self._call(self._page_call(call, cursor))
            for item in page["items"]:
                yield convert(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return


class AsyncClient(_Base, _AdminApi):
    """Coffer over HTTP, for asyncio: the same methods as ``Client``, awaited; lists are ``async for``."""

    def __init__(self, addr: str | None = None, token: str | None = None, **kwargs: Any) -> None:
        super().__init__(addr, token, **kwargs)
        self._http = httpx.AsyncClient(timeout=self.timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, call: _Call) -> Any:  # type: ignore[override]
        attempt = 0
        while True:
            try:
                response = await self._http.request(**self._request(call))
            except httpx.HTTPError as exc:
                raise CofferError(f"cannot reach {self.addr}: {type(exc).__name__}", status=0) from None
            wait, result = self._read(call, response, attempt)
            if wait is None:
                return result
            await asyncio.sleep(wait)
            attempt += 1

    async def _list(self, call: _Call, convert: Callable[[Any], Any]) -> AsyncIterator[Any]:  # type: ignore[override]
        cursor = None
        while True:
            page = await self._call(self._page_call(call, cursor))
            for item in page["items"]:
                yield convert(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return
