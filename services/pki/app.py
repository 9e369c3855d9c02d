"""Composition root of the ``pki`` service: CAs, roles, issuing, CSR approval, CRL and OCSP, trust anchors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from services.pki.authority import Authority, ca_aad
from services.pki.handlers import PkiHandlers
from services.pki.repository import PkiRepository
from services.pki.settings import PkiSettings
from shared.contracts import rpc_table
from shared.cursors import CursorCodec
from shared.db import SealedColumns, sealed_keys
from shared.durations import parse_duration
from shared.jobs import Sweep, run_sweeps
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
    yield Running(rpc=rpc_table(PkiHandlers(repo, authority, cursors)))


SPEC = ServiceSpec(
    name="pki", migrations=Path(__file__).parent / "migrations", lifespan=lifespan, settings=PkiSettings,
    # a deleted tenant's CAs go with their sealed keys; certificates and CSRs before the CAs they name
    tenant_tables=("csrs", "certificates", "roles", "trust_anchors", "cas"),
    sealed=(SealedColumns("cas", key=("id",), aad=lambda row: ca_aad(row["id"])),),
)
