"""Composition root of the ``pki`` service: CAs, roles, issuing, CSR approval, CRL and OCSP, trust anchors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from services.pki.acme.handlers import AcmeHandlers
from services.pki.acme.orders import OrderWorker
from services.pki.acme.service import Acme
from services.pki.acme.store import AcmeStore, account_aad, order_aad, provider_aad
from services.pki.authority import Authority, ca_aad
from services.pki.handlers import PkiHandlers
from services.pki.repository import PkiRepository
from services.pki.settings import PkiSettings
from shared.contracts import rpc_table
from shared.cursors import CursorCodec
from shared.db import SealedColumns, by_tenant_id, sealed_keys
from shared.durations import parse_duration
from shared.jobs import QueueRunner, Sweep, run_sweeps
from shared.runtime import Running, ServiceDeps, ServiceSpec


@asynccontextmanager
async def lifespan(deps: ServiceDeps) -> AsyncIterator[Running]:
    settings = deps.settings_of(PkiSettings)
    repo = PkiRepository(deps.pool, deps.schema)
    authority = Authority(
        repo, deps.kms, settings.public_url,
        crl_lifetime=parse_duration(settings.pki_crl_lifetime, field="COFFER_PKI_CRL_LIFETIME"),
        ocsp_lifetime=parse_duration(settings.pki_ocsp_lifetime, field="COFFER_PKI_OCSP_LIFETIME"))
    notice = parse_duration(settings.pki_expiry_notice, field="COFFER_PKI_EXPIRY_NOTICE")
    cursors = CursorCodec(await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor"))
    # certificate.expiring once per certificate, CRLs re-signed before they lapse: once across replicas
    jobs = [Sweep("certificate-expiry", lambda limit: repo.publish_expiring(notice, limit)),
            Sweep("crl-refresh", authority.refresh_crls)]
    deps.spawn(run_sweeps(jobs, settings.lifecycle_interval), "pki-lifecycle")
    # the ACME client: orders and renewals on a leased queue, once across replicas
    store = AcmeStore(deps.pool, deps.schema)
    acme = Acme(store, deps.kms, deps.outbound(), timeout=settings.acme_timeout)
    worker = OrderWorker(store, acme, renew_fraction=settings.acme_renew_fraction,
                         propagation_timeout=settings.acme_propagation_timeout,
                         validation_timeout=settings.acme_validation_timeout, retry_base=settings.acme_retry_base)
    orders: QueueRunner[Any] = QueueRunner(worker, name="acme-orders", concurrency=settings.acme_concurrency,
                                           poll_interval=settings.acme_poll_interval)
    deps.spawn(orders.run(), "pki-acme-orders")
    yield Running(rpc={**rpc_table(PkiHandlers(repo, authority, cursors)),
                       **rpc_table(AcmeHandlers(acme, store, cursors, orders))})


SPEC = ServiceSpec(
    name="pki", migrations=Path(__file__).parent / "migrations", lifespan=lifespan, settings=PkiSettings,
    # a deleted tenant's CAs go with their sealed keys; certificates and CSRs before the CAs they name
    tenant_tables=("csrs", "certificates", "acme_orders", "acme_accounts", "acme_dns_providers", "roles",
                   "trust_anchors", "cas"),
    sealed=(SealedColumns("cas", key=("id",), aad=lambda row: ca_aad(row["id"]), columns=("tenant_id",),
                          tenant=by_tenant_id),
            # ACME account keys, TSIG secrets, the private keys of certificates ACME CAs issued
            SealedColumns("acme_accounts", key=("id",), aad=lambda row: account_aad(row["id"]),
                          columns=("tenant_id",), tenant=by_tenant_id),
            SealedColumns("acme_dns_providers", key=("id",), aad=lambda row: provider_aad(row["id"]),
                          columns=("tenant_id",), tenant=by_tenant_id),
            SealedColumns("acme_orders", key=("id",), aad=lambda row: order_aad(row["id"]),
                          columns=("tenant_id",), tenant=by_tenant_id)),
    gauges={"coffer_certificates_expiring": "SELECT count(*) FROM certificates WHERE revoked_at IS NULL"
                                            " AND not_after > now() AND not_after < now() + interval '7 days'"},
)
