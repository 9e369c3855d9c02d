"""The calls people make every day — tokens, secrets, a certificate, dynamic credentials — described
once for ``Client`` and ``AsyncClient`` (``_Api._call`` runs them one way or the other)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

from coffer_client._base import _Call, _drop_none, _identity, _secret_path, _seg
from coffer_client.models import Engine, Issued, Lease, LeaseCredentials, Secret, SecretMeta, Token


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

    def init(self, secret_shares: int | None = None, secret_threshold: int | None = None) -> dict[str, Any]:
        """Once, on an empty system: the root tenant, its admin's client id and secret, and a token; under the
        ``shamir`` seal also the ``unseal_shares`` (shown this once), ``secret_threshold`` of ``secret_shares``."""
        body = _drop_none({"secret_shares": secret_shares, "secret_threshold": secret_threshold})
        return self._call(_Call("POST", "/v1/sys/init", body or None))

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

    def login_jwt(self, method: str, role: str, jwt: str) -> Token:
        """A token for a workload's own JWT (a Kubernetes service-account token, a CI job's OIDC token) with
        ``role`` of the ``jwt`` auth method ``method``, in the client's tenant (the root tenant when unset)."""
        return self._call(_Call("POST", f"/v1/auth/methods/{_seg(method)}/login", {"role": role, "jwt": jwt},
                                convert=self._use_token))

    def authorize_url(self, method: str, role: str, redirect_uri: str, state: str, code_challenge: str) -> str:
        """Where a browser starts signing in with ``role`` of the ``oidc`` method ``method``
        (``GET /v1/auth/methods/{name}/authorize``, which answers 302 to the provider): no call is made.
        ``code_challenge`` is the S256 of a PKCE verifier; the client's tenant goes in ``tenant_id``."""
        query = _drop_none({"role": role, "redirect_uri": redirect_uri, "state": state,
                            "code_challenge": code_challenge, "code_challenge_method": "S256",
                            "tenant_id": getattr(self, "tenant", None) or None})
        return f"{getattr(self, 'addr', '').rstrip('/')}/v1/auth/methods/{_seg(method)}/authorize?{urlencode(query)}"

    def login_oidc(self, method: str, code: str, state: str, code_verifier: str, redirect_uri: str) -> Token:
        """A token for a person who signed in at the provider: the ``code`` and ``state`` the provider sent
        to ``redirect_uri``, and the PKCE ``code_verifier`` (``POST /v1/auth/methods/{name}/callback``)."""
        return self._call(_Call("POST", f"/v1/auth/methods/{_seg(method)}/callback", {
            "code": code, "state": state, "code_verifier": code_verifier, "redirect_uri": redirect_uri},
            convert=self._use_token))

    def start_device_login(self, method: str, role: str) -> dict[str, Any]:
        """A device sign-in with ``role`` of the ``oidc`` method ``method`` (RFC 8628, where the provider
        offers it): ``{device_code, user_code, verification_uri, verification_uri_complete?, expires_in,
        interval}``. The person opens ``verification_uri`` anywhere and enters ``user_code``; meanwhile
        ``login_device(method, device_code)`` is polled every ``interval`` seconds."""
        return self._call(_Call("POST", f"/v1/auth/methods/{_seg(method)}/device", {"role": role}))

    def login_device(self, method: str, device_code: str) -> Token:
        """A token once the person of a device sign-in has signed in (``POST …/device/token``). Until then an
        ``AuthenticationError`` whose ``details["reason"]`` is ``authorization_pending`` or ``slow_down``
        (poll again after ``details["interval"]`` seconds); any other reason ends the sign-in."""
        return self._call(_Call("POST", f"/v1/auth/methods/{_seg(method)}/device/token",
                                {"device_code": device_code}, convert=self._use_token))

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

    def rotate_secret(self, path: str) -> SecretMeta:
        """A new version with a value generated by the matching rotation policy."""
        return self._call(_Call("POST", f"/v1/secrets/{_secret_path(path)}:rotate", convert=SecretMeta.from_dict))

    def purge_secret(self, path: str) -> None:
        """Destroy every version now."""
        return self._call(_Call("POST", f"/v1/secrets/{_secret_path(path)}:purge"))

    # -- exports ---------------------------------------------------------------------------------------

    def create_export(self, prefix: str, format: str, recipient: str) -> dict[str, Any]:  # noqa: A002
        """Start an age-encrypted export of the secrets under ``prefix`` you may read: ``{id, status, …}``."""
        return self._call(_Call("POST", "/v1/exports", {"prefix": prefix, "format": format, "recipient": recipient}))

    def get_export(self, export_id: str) -> dict[str, Any]:
        """An export's status: ``pending`` (``done`` of ``count``), ``ready`` or ``failed``."""
        return self._call(_Call("GET", f"/v1/exports/{_seg(export_id)}"))

    def export_bundle(self, export_id: str) -> bytes:
        """A ready export's bundle, in the binary age format (``age -d -i key.txt`` opens it)."""
        return self._call(_Call("GET", f"/v1/exports/{_seg(export_id)}/bundle", text=True,
                                headers={"Accept": "application/octet-stream"}))

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
