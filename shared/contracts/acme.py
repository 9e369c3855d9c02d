"""RPC contracts of the ACME client (api.md §6, "ACME client"), served by the ``pki`` service, and its client.

Accounts at an ACME CA (RFC 8555), RFC 2136 DNS providers for DNS-01, and
orders: an order is created at the CA before the call answers (202), then the
job runner answers its challenges, finalizes and downloads the certificate,
and renews it for as long as the order exists.

Secrets — account keys, TSIG secrets, certificates' private keys — are sealed
at rest; none is ever in an answer but the private key at its own route.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, StrictStr

from shared.context import RequestContext
from shared.contracts import Contract, Empty, HeaderSafeStr, HeaderSafeValue, Method, Page, PageRequest, ServiceClient
from shared.contracts.pki import MAX_PEM, NAME_PATTERN

OrderStatus = Literal["pending", "processing", "valid", "invalid"]
TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
#: an order's names: DNS names (wildcards allowed), at most this many
MAX_DOMAINS = 100
ACCOUNT_ID = r"^acct_[0-9a-f]{24}$"
PROVIDER_ID = r"^dnsp_[0-9a-f]{24}$"
ORDER_ID = r"^acmeo_[0-9a-f]{24}$"


#: an ACME contact address: no control, space or separator characters (spelled out, not ``\s``: Python, Rust
#: and ECMA-262, which the OpenAPI description is read with, each mean a different set by it)
_NOT_IN_EMAIL = r"@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff:,<>"
EMAIL = rf"^[^{_NOT_IN_EMAIL}]{{1,64}}@[^{_NOT_IN_EMAIL}]{{1,189}}$"

class Eab(Contract):
    """External account binding (RFC 8555 §7.3.4): the key id and MAC key the CA handed out."""

    kid: HeaderSafeStr = Field(min_length=1, max_length=256)
    #: base64url, as CAs give it
    hmac_key: StrictStr = Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_=-]+$", repr=False)


class AccountCreate(Contract):
    """``POST /v1/pki/acme/accounts``."""

    directory_url: HeaderSafeStr = Field(min_length=1, max_length=2048)
    email: StrictStr | None = Field(None, max_length=254, pattern=EMAIL)
    eab: Eab | None = None
    #: extra roots (PEM) to trust for this CA's TLS certificate, as cert-manager's ``caBundle``
    ca_bundle: StrictStr | None = Field(None, max_length=MAX_PEM)


class AccountView(Contract):
    id: str
    directory_url: str
    email: str | None
    account_url: str
    status: str
    eab_kid: str | None
    created_at: datetime


class ProviderCreate(Contract):
    """``POST /v1/pki/acme/dns-providers``; ``config`` is checked per type by the service."""

    name: StrictStr = Field(pattern=NAME_PATTERN)
    type: Literal["rfc2136"]
    config: dict[StrictStr, HeaderSafeValue] = Field(repr=False, max_length=16)


class Rfc2136Config(Contract):
    #: ``host`` or ``host:port`` (port 53 by default); IPv6 as ``[addr]:port``
    nameserver: HeaderSafeStr = Field(min_length=1, max_length=300)
    zone: HeaderSafeStr = Field(min_length=1, max_length=253)
    tsig_key_name: HeaderSafeStr = Field(min_length=1, max_length=253)
    tsig_secret: HeaderSafeStr = Field(min_length=1, max_length=1024, repr=False)
    tsig_algorithm: Literal["hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1"] = \
        "hmac-sha256"


class ProviderView(Contract):
    id: str
    name: str
    type: str
    #: the config without ``tsig_secret``
    config: dict[str, Any]
    created_at: datetime


class OrderCreate(Contract):
    """``POST /v1/pki/acme/orders``."""

    account_id: StrictStr = Field(min_length=1, max_length=64)
    dns_provider_id: StrictStr = Field(min_length=1, max_length=64)
    domains: list[StrictStr] = Field(min_length=1, max_length=MAX_DOMAINS)


class OrderView(Contract):
    id: str
    account_id: str
    dns_provider_id: str
    domains: list[str]
    status: OrderStatus
    #: ``acme_order_failed`` once the order is ``invalid``
    error: str | None
    #: the CA's problem document when the last run failed (RFC 7807, as the CA sent it), or ours
    #: (``urn:coffer:dns-update``) when the DNS server refused the records
    problem: dict[str, Any] | None
    #: the newest certificate (its serial among the PKI's certificates)
    serial: str | None
    not_after: datetime | None
    renew_at: datetime | None
    renewals: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class OrderKey(Contract):
    """``GET /v1/pki/acme/orders/{id}/private-key``: the newest certificate with its key."""

    serial: str
    certificate: str
    chain: list[str]
    private_key: str = Field(repr=False)
    not_after: datetime


class Ref(Contract):
    id: StrictStr = Field(min_length=1, max_length=64)


class OrderList(PageRequest):
    status: OrderStatus | None = None


SERVICE = "pki"
ACCOUNT_CREATE = Method(SERVICE, "acme_account_create", AccountCreate, AccountView)
ACCOUNT_GET = Method(SERVICE, "acme_account_get", Ref, AccountView)
ACCOUNT_LIST = Method(SERVICE, "acme_account_list", PageRequest, Page[AccountView])
ACCOUNT_DELETE = Method(SERVICE, "acme_account_delete", Ref, Empty)
PROVIDER_CREATE = Method(SERVICE, "acme_provider_create", ProviderCreate, ProviderView)
PROVIDER_GET = Method(SERVICE, "acme_provider_get", Ref, ProviderView)
PROVIDER_LIST = Method(SERVICE, "acme_provider_list", PageRequest, Page[ProviderView])
PROVIDER_DELETE = Method(SERVICE, "acme_provider_delete", Ref, Empty)
ORDER_CREATE = Method(SERVICE, "acme_order_create", OrderCreate, OrderView)
ORDER_GET = Method(SERVICE, "acme_order_get", Ref, OrderView)
ORDER_LIST = Method(SERVICE, "acme_order_list", OrderList, Page[OrderView])
ORDER_KEY = Method(SERVICE, "acme_order_key", Ref, OrderKey)
ORDER_DELETE = Method(SERVICE, "acme_order_delete", Ref, Empty)


class AcmeClient(ServiceClient):
    """The ACME client's resources, over the bus."""

    async def create_account(self, ctx: RequestContext, request: AccountCreate) -> AccountView:
        # registering talks to the CA (directory, nonce, new-account): up to a minute
        return await self._call(ACCOUNT_CREATE, ctx, request, timeout=70.0)

    async def get_account(self, ctx: RequestContext, request: Ref) -> AccountView:
        return await self._call(ACCOUNT_GET, ctx, request)

    async def list_accounts(self, ctx: RequestContext, request: PageRequest) -> Page[AccountView]:
        return await self._call(ACCOUNT_LIST, ctx, request)

    async def delete_account(self, ctx: RequestContext, request: Ref) -> None:
        await self._call(ACCOUNT_DELETE, ctx, request)

    async def create_provider(self, ctx: RequestContext, request: ProviderCreate) -> ProviderView:
        return await self._call(PROVIDER_CREATE, ctx, request, timeout=40.0)

    async def get_provider(self, ctx: RequestContext, request: Ref) -> ProviderView:
        return await self._call(PROVIDER_GET, ctx, request)

    async def list_providers(self, ctx: RequestContext, request: PageRequest) -> Page[ProviderView]:
        return await self._call(PROVIDER_LIST, ctx, request)

    async def delete_provider(self, ctx: RequestContext, request: Ref) -> None:
        await self._call(PROVIDER_DELETE, ctx, request)

    async def create_order(self, ctx: RequestContext, request: OrderCreate) -> OrderView:
        # the order is placed at the CA before the answer
        return await self._call(ORDER_CREATE, ctx, request, timeout=70.0)

    async def get_order(self, ctx: RequestContext, request: Ref) -> OrderView:
        return await self._call(ORDER_GET, ctx, request)

    async def list_orders(self, ctx: RequestContext, request: OrderList) -> Page[OrderView]:
        return await self._call(ORDER_LIST, ctx, request)

    async def order_key(self, ctx: RequestContext, request: Ref) -> OrderKey:
        return await self._call(ORDER_KEY, ctx, request)

    async def delete_order(self, ctx: RequestContext, request: Ref) -> None:
        await self._call(ORDER_DELETE, ctx, request)
