"""The order job: DNS-01 through the tenant's provider, finalize, download, store — and renew.

A ``LeasedQueue`` on the shared job runner: an order (new, a retry that is
due, or a valid one whose renewal time came) is claimed by one replica with a
lease and worked on outside any transaction:

1. the CA's order (created by the request, or a new one for a renewal —
   naming the certificate it ``replaces`` when the CA offers ARI);
2. for each pending authorization, its ``dns-01`` challenge: the TXT record
   ``_acme-challenge.<name>`` written by RFC 2136 update (names outside the
   provider's zone get none: the CA judges them), visible at the zone's
   server, then the challenge answered and the authorization polled;
3. the TXT records removed, whatever happened;
4. finalize with a key made here (EC P-256), poll, download the chain;
5. the certificate stored among the PKI's, its key sealed on the order, the
   renewal time set: the CA's ARI window when it has one, else
   ``renew_fraction`` of the lifetime.

The CA's rate limit and unreachable CAs or DNS servers are retried with
backoff (at most ``MAX_ATTEMPTS`` runs); a refusal ends a first order
``invalid`` with the problem; a failed renewal keeps the order ``valid`` and
is retried, each failure an ``acme.order.failed`` event long before expiry.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import josepy as jose
import structlog
from acme import challenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.pki import keys, x500
from services.pki.acme.dns import DnsFailed, Rfc2136
from services.pki.acme.protocol import AcmeProblem, AcmeRateLimited, AcmeSession, AcmeUnavailable, cert_id
from services.pki.acme.service import Acme
from services.pki.acme.store import AcmeStore, Row, order_aad
from shared.crypto import seal
from shared.jobs import backoff

log = structlog.get_logger("coffer.pki.acme")
MAX_ATTEMPTS = 5


class OrderRefused(Exception):
    """The order can't succeed as it is: ``problem`` says why (the CA's document, or ours)."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("type")))
        self.problem = problem


def _problem(doc: dict[str, Any] | None, fallback: str) -> dict[str, Any]:
    if isinstance(doc, dict) and doc.get("type"):
        return {k: doc[k] for k in ("type", "detail", "status", "subproblems") if k in doc}
    return {"type": "about:blank", "detail": fallback}


def _csr(key: ec.EllipticCurvePrivateKey, domains: list[str]) -> bytes:
    """The order's CSR: every domain a SAN; the common name the first domain X.509 allows there (at most 64
    characters), none when no domain fits (a CA takes the names from the SANs, RFC 8555 §7.4)."""
    fits = [d for d in domains if x500.problem(x500.ATTRIBUTES["common_name"], d) is None]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fits[0])] if fits else [])
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(subject)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
            .sign(key, hashes.SHA256())).public_bytes(serialization.Encoding.DER)


class OrderWorker:
    def __init__(self, store: AcmeStore, acme: Acme, *, renew_fraction: float, propagation_timeout: float,
                 validation_timeout: float, retry_base: float) -> None:
        self.store = store
        self.acme = acme
        self.renew_fraction = renew_fraction
        self.propagation_timeout = propagation_timeout
        self.validation_timeout = validation_timeout
        self.retry_base = retry_base

    async def claim(self, free: int) -> Sequence[Row]:
        return await self.store.claim(free)

    async def work(self, item: Row) -> None:
        renewal = item["serial"] is not None
        started = datetime.now(UTC)
        if renewal and item["renew_at"] > started:  # an ARI check, before the renewal time
            try:
                if not await self._ari_says_now(item):
                    return  # the window is still ahead
            except (AcmeProblem, AcmeUnavailable) as exc:
                # the CA's ARI is away: ask again later; the renewal time stands (never renew early for it)
                log.warning("acme_ari_check_failed", order_id=item["id"], error=type(exc).__name__)
                await self.store.reschedule(item["id"], item["renew_at"], started + timedelta(hours=1))
                return
        try:
            await self._run(item, renewal)
            log.info("acme_order_done", order_id=item["id"], renewal=renewal,
                     seconds=round((datetime.now(UTC) - started).total_seconds(), 2))
        except OrderRefused as exc:
            await self._fail(item, exc.problem, retry=renewal)
        except AcmeRateLimited as exc:
            await self._again(item, exc.problem, exc.retry_after)
        except AcmeProblem as exc:
            await self._fail(item, exc.problem, retry=renewal)
        except AcmeUnavailable as exc:
            problem = {"type": "urn:coffer:outbound-refused" if exc.refused else "about:blank", "detail": exc.reason}
            if exc.refused:  # the CA pointed us where the guard won't go: retrying changes nothing
                await self._fail(item, problem, retry=renewal)
            else:
                await self._again(item, problem, None)
        except DnsFailed as exc:
            problem = {"type": "urn:coffer:dns-update", "detail": exc.reason}
            if exc.transient:
                await self._again(item, problem, None)
            else:
                await self._fail(item, problem, retry=renewal)

    async def _again(self, item: Row, problem: dict[str, Any], retry_after: int | None) -> None:
        """A trouble that may pass: again later, until ``MAX_ATTEMPTS`` runs."""
        if item["attempts"] >= MAX_ATTEMPTS:
            await self._fail(item, problem, retry=item["serial"] is not None)
            return
        wait = max(float(retry_after or 0), backoff(item["attempts"], base=self.retry_base, cap=3600.0))
        log.warning("acme_order_retry", order_id=item["id"], attempt=item["attempts"], problem=problem.get("type"),
                    seconds=round(wait, 1))
        await self.store.retry(item["id"], datetime.now(UTC) + timedelta(seconds=wait), problem,
                               renewal=item["serial"] is not None)

    async def _fail(self, item: Row, problem: dict[str, Any], *, retry: bool) -> None:
        # a renewal goes on being tried (the certificate still serves); each failure is an event
        at = (datetime.now(UTC) + timedelta(seconds=backoff(max(1, item["attempts"]), base=self.retry_base * 10,
                                                            cap=6 * 3600.0))) if retry else None
        log.warning("acme_order_failed", order_id=item["id"], problem=problem.get("type"), renewal=retry)
        await self.store.failed(item, problem, at)

    async def _run(self, item: Row, renewal: bool) -> None:
        tenant_id = item["tenant_id"]
        account = await self.store.account(tenant_id, item["account_id"], with_key=True)
        provider = await self.acme.provider(await self.store.provider(tenant_id, item["dns_provider_id"],
                                                                      with_key=True))
        domains = list(item["domains"])
        async with self.acme.session(account) as session:
            order_url = item["order_url"]
            doc = await session.fetch(order_url) if order_url else None
            if doc is None or doc.get("status") not in ("pending", "ready"):
                # a renewal, or a run that died after finalizing (its key is gone): a fresh order
                replaces = await self._replaces(session, item) if renewal else None
                order_url, doc = await session.new_order(domains, replaces)
            await self.store.extend(item["id"], order_url)
            await self._authorize(session, provider, doc)
            await self.store.extend(item["id"])
            doc = await session.fetch(order_url)
            if doc.get("status") != "ready":
                raise OrderRefused(_problem(doc.get("error"), f"the order is '{doc.get('status')}', not ready"))
            key = keys.generate("ec-p256")
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            await session.finalize(doc["finalize"], _csr(key, domains))
            doc = await session.poll(order_url, ("valid",), seconds=self.validation_timeout)
            if doc.get("status") != "valid" or not isinstance(doc.get("certificate"), str):
                raise OrderRefused(_problem(doc.get("error"), "the CA did not issue the certificate"))
            pem = await session.download(doc["certificate"])
            cert = self._parse(pem, key, domains)
            renew_at, ari_check_at = await self._renew_at(session, cert["parsed"])
        sealed = seal(self.acme.kms.tenant(item["tenant_id"]), keys.to_der(key), order_aad(item["id"]))
        await self.store.issued(item, cert, sealed, renew_at, ari_check_at)

    async def _ari_says_now(self, item: Row) -> bool:
        """An ARI check of a valid order before its renewal time: ``True`` when the CA's window has begun (it
        may move earlier, e.g. before a mass revocation); otherwise the order is rescheduled by the window."""
        account = await self.store.account(item["tenant_id"], item["account_id"], with_key=True)
        pem = await self.store.pool.fetchval("SELECT certificate FROM certificates WHERE serial = $1", item["serial"])
        cert = x509.load_pem_x509_certificate(pem.encode())
        async with self.acme.session(account) as session:
            window = await session.renewal_window(cert)
        now = datetime.now(UTC)
        if window is None:  # the CA stopped offering ARI: the lifetime's fraction
            life = cert.not_valid_after_utc - cert.not_valid_before_utc
            await self.store.reschedule(item["id"], cert.not_valid_before_utc + life * self.renew_fraction, None)
            return False
        start, end, again = window
        if start <= now:
            return True
        renew_at = item["renew_at"] if start <= item["renew_at"] <= end else start + (end - start) * random.random()
        await self.store.reschedule(item["id"], renew_at, now + timedelta(seconds=again))
        return False

    async def _replaces(self, session: AcmeSession, item: Row) -> str | None:
        """The ARI id of the certificate a renewal replaces, when the CA offers ARI."""
        if "renewalInfo" not in (await session.directory()).to_partial_json():
            return None
        pem = await self.store.pool.fetchval("SELECT certificate FROM certificates WHERE serial = $1", item["serial"])
        return cert_id(x509.load_pem_x509_certificate(pem.encode())) if pem else None

    async def _authorize(self, session: AcmeSession, provider: Rfc2136, order: dict[str, Any]) -> None:
        records: list[tuple[str, str]] = []
        pending: list[tuple[str, str]] = []
        for url in order.get("authorizations") or []:
            authz = await session.fetch(url)
            if authz.get("status") == "valid":
                continue
            if authz.get("status") != "pending":
                raise OrderRefused(_problem(None, f"an authorization is '{str(authz.get('status'))[:20]}'"))
            chall = next((c for c in authz.get("challenges") or [] if c.get("type") == "dns-01"), None)
            if chall is None:
                raise OrderRefused({"type": "urn:coffer:no-dns-01",
                                    "detail": "the CA offers no dns-01 challenge for a name"})
            token = jose.b64decode(str(chall["token"]))
            value = challenges.DNS01(token=token).validation(session.key)
            records.append((f"_acme-challenge.{authz['identifier']['value']}", value))
            pending.append((url, str(chall["url"])))
        ours = [r for r in records if provider.holds(r[0])]
        try:
            if ours:
                await provider.add(ours)
                await provider.visible(ours, seconds=self.propagation_timeout)
            for _, chall_url in pending:
                await session.answer_challenge(chall_url)
            for url, _ in pending:
                authz = await session.poll(url, ("valid",), seconds=self.validation_timeout)
                if authz.get("status") != "valid":
                    failed = next((c.get("error") for c in authz.get("challenges") or [] if c.get("error")), None)
                    raise OrderRefused(_problem(failed, "the CA could not validate a name"))
        finally:
            if ours:
                try:
                    await provider.remove(ours)
                except DnsFailed as exc:
                    log.warning("acme_txt_cleanup_failed", reason=exc.reason)

    def _parse(self, pem: str, key: ec.EllipticCurvePrivateKey, domains: list[str]) -> dict[str, Any]:
        try:
            certs = x509.load_pem_x509_certificates(pem.encode())
        except ValueError:
            raise OrderRefused({"type": "about:blank", "detail": "the CA's certificate chain is not PEM"}) from None
        leaf = certs[0]
        if leaf.public_key() != key.public_key():
            raise OrderRefused({"type": "about:blank", "detail": "the CA's certificate is not for our key"})
        try:
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [n.lower() for n in sans.get_values_for_type(x509.DNSName)]
        except x509.ExtensionNotFound:
            names = []
        if set(domains) - set(names):
            raise OrderRefused({"type": "about:blank", "detail": "the CA's certificate lacks requested names"})
        as_pem = [c.public_bytes(serialization.Encoding.PEM).decode() for c in certs]
        return {"serial": format(leaf.serial_number, "x"), "common_name": domains[0], "sans": names,
                "not_before": leaf.not_valid_before_utc, "not_after": leaf.not_valid_after_utc,
                "certificate": as_pem[0], "chain": "".join(as_pem[1:]), "parsed": leaf}

    async def _renew_at(self, session: AcmeSession, cert: x509.Certificate) -> tuple[datetime, datetime | None]:
        """(renewal time, next ARI check): a random point of the CA's ARI window, asked again when the CA
        says; without ARI ``renew_fraction`` of the lifetime, and no checks."""
        try:
            window = await session.renewal_window(cert)
        except (AcmeProblem, AcmeUnavailable):
            window = None
        if window is not None:
            start, end, again = window
            return start + (end - start) * random.random(), datetime.now(UTC) + timedelta(seconds=again)
        life = cert.not_valid_after_utc - cert.not_valid_before_utc
        return cert.not_valid_before_utc + life * self.renew_fraction, None
