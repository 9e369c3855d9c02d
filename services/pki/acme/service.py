"""The ACME client's requests: registering accounts, checking DNS providers, placing orders.

What the CA says is turned into the vocabulary here: its ``rateLimited`` (or
HTTP 429) is ``backend_rate_limited`` with its ``Retry-After``; unreachable,
TLS failures and 5xx are ``backend_error`` (``backend_timeout`` when a CA at
public addresses did not answer in time; through the operator's private
allow-list every one of them reads "could not connect to the ACME CA", see
``protocol``); a problem document refusing an order is
``acme_order_failed`` with the problem in ``details.problem``; one refusing an
account (a bad EAB, an unsupported contact) is ``invalid_config``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import josepy as jose
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError as PydanticError

from services.pki import keys
from services.pki.acme.dns import TIMEOUT as DNS_TIMEOUT
from services.pki.acme.dns import DnsFailed, Rfc2136, open_provider
from services.pki.acme.protocol import AcmeProblem, AcmeRateLimited, AcmeSession, AcmeUnavailable
from services.pki.acme.store import AcmeStore, Row, account_aad, new_id, provider_aad, sealed_of
from services.pki.names import _is_ip, to_a_labels
from shared.contracts import field_errors
from shared.contracts.acme import AccountCreate, OrderCreate, ProviderCreate, Rfc2136Config
from shared.crypto import seal, unseal
from shared.errors import (
    AcmeOrderFailed,
    BackendError,
    BackendRateLimited,
    BackendTimeout,
    CofferError,
    InvalidConfig,
    ValidationError,
)
from shared.keyring import ServiceKeyring
from shared.outbound import OutboundPolicy, OutboundRefused, check

log = structlog.get_logger("coffer.pki.acme")


def upstream_error(exc: Exception, *, refused: type[CofferError] = AcmeOrderFailed) -> CofferError:
    """The vocabulary's answer for what the CA (or the way to it) did."""
    if isinstance(exc, AcmeRateLimited):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return BackendRateLimited("the ACME CA is rate limiting us", details={"problem": exc.problem},
                                  headers=headers)
    if isinstance(exc, AcmeProblem):
        return refused(f"the ACME CA refused: {str(exc.problem.get('detail', exc.kind))[:300]}",
                       details={"problem": exc.problem})
    if isinstance(exc, AcmeUnavailable):
        if exc.timeout:
            return BackendTimeout(exc.reason)
        return BackendError(exc.reason)
    raise exc


def load_key(der: bytes) -> jose.JWKEC:
    key = keys.from_der(der)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return jose.JWKEC(key=key)


class Acme:
    def __init__(self, store: AcmeStore, kms: ServiceKeyring, policy: OutboundPolicy, *, timeout: float = 30.0) -> None:
        self.store = store
        self.kms = kms
        self.policy = policy
        self.timeout = timeout

    # -- accounts ----------------------------------------------------------------------------------

    async def create_account(self, tenant_id: str, req: AccountCreate) -> Row:
        try:
            await check(req.directory_url, self.policy)
        except OutboundRefused as exc:
            raise InvalidConfig(f"directory_url can't be used: {exc.reason}",
                                details={"field": "directory_url"}) from None
        if req.ca_bundle is not None:
            try:
                x509.load_pem_x509_certificates(req.ca_bundle.encode())
            except ValueError:
                raise ValidationError.on("ca_bundle", "PEM certificates") from None
        key = keys.generate("ec-p256")
        jwk = jose.JWKEC(key=key)
        eab = (req.eab.kid, req.eab.hmac_key) if req.eab else None
        try:
            async with AcmeSession(req.directory_url, jwk, self.policy, ca_bundle=req.ca_bundle,
                                   timeout=self.timeout) as session:
                account_url, status = await session.register(req.email, eab)
        except (AcmeProblem, AcmeUnavailable) as exc:
            raise upstream_error(exc, refused=InvalidConfig) from None
        except ValueError:  # the EAB's MAC key is not base64url
            raise ValidationError.on("eab.hmac_key", "base64url") from None
        account_id = new_id("acct")
        der = keys.to_der(key)
        sealed = seal(self.kms.tenant(tenant_id), der, account_aad(account_id))
        row = await self.store.insert_account(
            {"id": account_id, "tenant_id": tenant_id, "directory_url": req.directory_url, "email": req.email,
             "ca_bundle": req.ca_bundle, "account_url": account_url, "status": status,
             "eab_kid": req.eab.kid if req.eab else None}, sealed)
        log.info("acme_account_created", account_id=account_id, tenant_id=tenant_id)
        return row

    @asynccontextmanager
    async def session(self, account: Row) -> AsyncIterator[AcmeSession]:
        """A session as ``account`` (a row read ``with_key``)."""
        der = unseal(self.kms.tenant(account["tenant_id"]), sealed_of(account), account_aad(account["id"]))
        async with AcmeSession(account["directory_url"], load_key(der), self.policy, ca_bundle=account["ca_bundle"],
                               account_url=account["account_url"], timeout=self.timeout) as session:
            yield session

    # -- DNS providers -----------------------------------------------------------------------------

    async def _open(self, config: dict[str, Any]) -> Rfc2136:
        try:
            parsed = Rfc2136Config.model_validate(config)
        except PydanticError as exc:
            raise InvalidConfig("the rfc2136 provider's config is not valid",
                                details={"fields": field_errors(exc)}) from None
        try:
            # a DNS query waits at most 10 s, and never longer than a call to the CA
            return await open_provider(parsed, self.policy, min(DNS_TIMEOUT, self.timeout))
        except ValueError as exc:
            raise InvalidConfig(str(exc)) from None

    async def create_provider(self, tenant_id: str, req: ProviderCreate) -> Row:
        provider = await self._open(req.config)
        try:
            await provider.check()
        except DnsFailed as exc:  # could not connect (one text, whatever happened), or what the server answered
            raise InvalidConfig(exc.reason if exc.transient else f"the DNS server refused the check: {exc.reason}",
                                details={"field": "config"}) from None
        provider_id = new_id("dnsp")
        shown = {k: v for k, v in req.config.items() if k != "tsig_secret"}
        shown.setdefault("tsig_algorithm", "hmac-sha256")
        secret = str(req.config["tsig_secret"]).encode()
        return await self.store.insert_provider(
            {"id": provider_id, "tenant_id": tenant_id, "name": req.name, "type": req.type, "config": shown},
            seal(self.kms.tenant(tenant_id), secret, provider_aad(provider_id)))

    async def provider(self, row: Row) -> Rfc2136:
        """A provider row (read ``with_key``) ready to write records."""
        secret = unseal(self.kms.tenant(row["tenant_id"]), sealed_of(row), provider_aad(row["id"]))
        return await self._open({**row["config"], "tsig_secret": secret.decode()})

    # -- orders ------------------------------------------------------------------------------------

    async def create_order(self, tenant_id: str, identity_id: str | None, req: OrderCreate) -> Row:
        domains = normalize_acme_domains(req.domains)
        account = await self.store.account(tenant_id, req.account_id, with_key=True)
        await self.store.provider(tenant_id, req.dns_provider_id)
        try:
            async with self.session(account) as session:
                order_url, _ = await session.new_order(domains)
        except (AcmeProblem, AcmeUnavailable) as exc:
            raise upstream_error(exc) from None
        row = await self.store.insert_order(
            {"id": new_id("acmeo"), "tenant_id": tenant_id, "account_id": req.account_id,
             "dns_provider_id": req.dns_provider_id, "domains": domains, "order_url": order_url,
             "created_by": identity_id})
        log.info("acme_order_created", order_id=row["id"], tenant_id=tenant_id, names=len(domains))
        return row


def normalize_acme_domains(domains: list[str]) -> list[str]:
    """Lower-case IDNA names, wildcards allowed, no duplicates; ``validation_error`` otherwise."""
    out: list[str] = []
    for domain in domains:
        wildcard = domain.startswith("*.")
        try:
            base = to_a_labels(domain[2:] if wildcard else domain)
        except ValueError as exc:
            raise ValidationError.on("domains", f"{domain[:80]!r}: {exc}") from None
        if "." not in base or _is_ip(base):
            raise ValidationError.on("domains", f"{domain[:80]!r}: a DNS name with at least two labels")
        out.append(f"*.{base}" if wildcard else base)
    return list(dict.fromkeys(out))
