"""The ACME client's calls (api.md §6, "ACME client"): accounts, DNS providers, orders."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from coffer_client._admin import API_CALLS as _ADMIN_CALLS
from coffer_client._admin import _AdminApi
from coffer_client._base import _Call, _drop_none, _identity, _seg


class _AcmeApi(_AdminApi):
    """Certificates from an ACME CA (Let's Encrypt, a private step-ca…), DNS-01 through RFC 2136."""

    def create_acme_account(self, directory_url: str, *, email: str | None = None, eab: dict[str, str] | None = None,
                            ca_bundle: str | None = None) -> dict[str, Any]:
        """Register at the CA (terms accepted); ``eab`` = ``{kid, hmac_key}`` when the CA binds accounts."""
        return self._call(_Call("POST", "/v1/pki/acme/accounts", _drop_none(
            {"directory_url": directory_url, "email": email, "eab": eab, "ca_bundle": ca_bundle})))

    def list_acme_accounts(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/acme/accounts", params={"limit": page_size}), _identity)

    def get_acme_account(self, account_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/acme/accounts/{_seg(account_id)}"))

    def delete_acme_account(self, account_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/pki/acme/accounts/{_seg(account_id)}"))

    def create_dns_provider(self, name: str, config: dict[str, Any], *, type: str = "rfc2136") -> dict[str, Any]:
        """``config``: ``{nameserver, zone, tsig_key_name, tsig_secret, tsig_algorithm}``."""
        return self._call(_Call("POST", "/v1/pki/acme/dns-providers", {"name": name, "type": type, "config": config}))

    def list_dns_providers(self, *, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/acme/dns-providers", params={"limit": page_size}), _identity)

    def get_dns_provider(self, provider_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/acme/dns-providers/{_seg(provider_id)}"))

    def delete_dns_provider(self, provider_id: str) -> None:
        return self._call(_Call("DELETE", f"/v1/pki/acme/dns-providers/{_seg(provider_id)}"))

    def create_acme_order(self, account_id: str, dns_provider_id: str, domains: list[str]) -> dict[str, Any]:
        """Placed at the CA now (202); ``get_acme_order`` shows it become ``valid`` or ``invalid``."""
        return self._call(_Call("POST", "/v1/pki/acme/orders", {
            "account_id": account_id, "dns_provider_id": dns_provider_id, "domains": domains}))

    def list_acme_orders(self, *, status: str | None = None, page_size: int = 100) -> Iterator[dict[str, Any]]:
        return self._list(_Call("GET", "/v1/pki/acme/orders", params=_drop_none(
            {"limit": page_size, "status": status})), _identity)

    def get_acme_order(self, order_id: str) -> dict[str, Any]:
        return self._call(_Call("GET", f"/v1/pki/acme/orders/{_seg(order_id)}"))

    def acme_order_key(self, order_id: str) -> dict[str, Any]:
        """The newest certificate, its chain and its private key (PKCS#8 PEM)."""
        return self._call(_Call("GET", f"/v1/pki/acme/orders/{_seg(order_id)}/private-key"))

    def delete_acme_order(self, order_id: str) -> None:
        """No more renewals; the certificates stay listed."""
        return self._call(_Call("DELETE", f"/v1/pki/acme/orders/{_seg(order_id)}"))


API_CALLS: dict[tuple[str, str], str] = {
    **_ADMIN_CALLS,
    ("POST", "/v1/pki/acme/accounts"): "create_acme_account", ("GET", "/v1/pki/acme/accounts"): "list_acme_accounts",
    ("GET", "/v1/pki/acme/accounts/{id}"): "get_acme_account",
    ("DELETE", "/v1/pki/acme/accounts/{id}"): "delete_acme_account",
    ("POST", "/v1/pki/acme/dns-providers"): "create_dns_provider",
    ("GET", "/v1/pki/acme/dns-providers"): "list_dns_providers",
    ("GET", "/v1/pki/acme/dns-providers/{id}"): "get_dns_provider",
    ("DELETE", "/v1/pki/acme/dns-providers/{id}"): "delete_dns_provider",
    ("POST", "/v1/pki/acme/orders"): "create_acme_order", ("GET", "/v1/pki/acme/orders"): "list_acme_orders",
    ("GET", "/v1/pki/acme/orders/{id}"): "get_acme_order",
    ("GET", "/v1/pki/acme/orders/{id}/private-key"): "acme_order_key",
    ("DELETE", "/v1/pki/acme/orders/{id}"): "delete_acme_order",
}
