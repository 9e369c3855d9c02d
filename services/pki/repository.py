"""The pki service's SQL. Every read and write names the tenant, but the two public ones (a CRL by
CA id, a CA by the hashes an OCSP request names it by), which relying parties make without one.

State changes and their events commit together (outbox). A revocation locks
its CA's row, so CRL numbers grow one by one and two revocations can't
publish CRLs that each miss the other's certificate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeAlias

import asyncpg

from shared.contracts.events import Event
from shared.contracts.times import rfc3339
from shared.crypto import Sealed
from shared.db import outbox
from shared.errors import (
    CaHasCertificates,
    CaNotFound,
    CertificateNotFound,
    CsrAlreadyProcessed,
    CsrNotFound,
    InvalidRequest,
    NameConflict,
    QuotaExceeded,
    RoleNotFound,
    TrustAnchorNotFound,
)

Row: TypeAlias = asyncpg.Record
#: signs a CA's CRL: (the CA's row, its revoked certificates, the CRL number) → (DER, next update)
CrlSigner = Callable[[Row, Sequence[Row], int], Awaitable[tuple[bytes, datetime]]]

_CA = ("id, tenant_id, name, common_name, key_type, parent_id, serial, not_before, not_after, max_path_length,"
       " certificate, created_at")
_CA_KEY = _CA + ", kek_id, wrapped_key, nonce, ciphertext"
_CERT = ("serial, tenant_id, ca_id, role, common_name, sans, ip_sans, not_before, not_after, certificate,"
         " revoked_at, revocation_reason, acme_order_id")


class PkiRepository:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def _event(self, conn: asyncpg.Connection, kind: str, tenant_id: str, request_id: str,
                     data: dict[str, Any]) -> None:
        await outbox.add(conn, Event(type=kind, tenant_id=tenant_id, request_id=request_id, data=data),
                         schema=self.schema)

    # -- CAs ---------------------------------------------------------------------------------

    async def insert_ca(self, values: dict[str, Any], sealed: Sealed, hashes: dict[str, tuple[bytes, bytes]],
                        crl: tuple[bytes, datetime], issued: dict[str, Any] | None, request_id: str) -> Row:
        """A new CA, its first (empty) CRL, and, for an intermediate, its certificate among its parent's."""
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    "INSERT INTO cas (id, tenant_id, name, common_name, key_type, parent_id, serial, not_before,"
                    " not_after, max_path_length, certificate, kek_id, wrapped_key, nonce, ciphertext,"
                    " sha1_name_hash, sha1_key_hash, sha256_name_hash, sha256_key_hash, crl_number, crl,"
                    " crl_next_update) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
                    f" $16, $17, $18, $19, 1, $20, $21) RETURNING {_CA}",
                    values["id"], values["tenant_id"], values["name"], values["common_name"], values["key_type"],
                    values["parent_id"], values["serial"], values["not_before"], values["not_after"],
                    values["max_path_length"], values["certificate"], sealed.kek_id, sealed.wrapped_key,
                    sealed.nonce, sealed.ciphertext, *hashes["sha1"], *hashes["sha256"], *crl)
            except asyncpg.UniqueViolationError:
                raise NameConflict(f"a CA named '{values['name']}' exists",
                                   details={"name": values["name"]}) from None
            if issued is not None:
                await self._insert_certificate(conn, issued, request_id)
            return row

    async def ca(self, tenant_id: str, ca_id: str, *, with_key: bool = False) -> Row:
        row = await self.pool.fetchrow(f"SELECT {_CA_KEY if with_key else _CA} FROM cas"
                                       " WHERE tenant_id = $1 AND id = $2", tenant_id, ca_id)
        if row is None:
            raise CaNotFound(f"CA '{ca_id}' not found", details={"id": ca_id})
        return row

    async def list_cas(self, tenant_id: str, after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            f"SELECT {_CA} FROM cas WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3",
            tenant_id, after, limit))

    async def chain(self, tenant_id: str, ca_id: str) -> list[str]:
        """The CA's certificate and its parents' up to the root (PEM, in that order)."""
        rows = await self.pool.fetch(
            "WITH RECURSIVE up AS (SELECT id, parent_id, certificate, 0 AS depth FROM cas"
            " WHERE tenant_id = $1 AND id = $2 UNION ALL SELECT c.id, c.parent_id, c.certificate, up.depth + 1"
            " FROM cas c JOIN up ON c.id = up.parent_id WHERE c.tenant_id = $1 AND up.depth < 16)"
            " SELECT certificate FROM up ORDER BY depth", tenant_id, ca_id)
        if not rows:
            raise CaNotFound(f"CA '{ca_id}' not found", details={"id": ca_id})
        return [r["certificate"] for r in rows]

    async def delete_ca(self, tenant_id: str, ca_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT id FROM cas WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                                      tenant_id, ca_id)
            if row is None:
                raise CaNotFound(f"CA '{ca_id}' not found", details={"id": ca_id})
            issued = await conn.fetchval("SELECT count(*) FROM certificates WHERE ca_id = $1", ca_id)
            children = await conn.fetchval("SELECT count(*) FROM cas WHERE parent_id = $1", ca_id)
            if issued or children:
                raise CaHasCertificates("the CA has issued certificates", details={
                    "id": ca_id, "certificates": issued, "intermediates": children})
            await conn.execute("DELETE FROM cas WHERE id = $1", ca_id)

    async def crl(self, ca_id: str) -> Row | None:
        """A CA's current CRL, by id alone (public)."""
        return await self.pool.fetchrow("SELECT crl, crl_next_update FROM cas WHERE id = $1", ca_id)

    async def ocsp_subject(self, algorithm: str, name_hash: bytes, key_hash: bytes, serial: str) -> Row | None:
        """The CA an OCSP request names (public), with what it recorded of ``serial``: one round trip.
        ``known`` is false for a serial it never signed."""
        column = {"sha1": "sha1", "sha256": "sha256"}[algorithm]
        return await self.pool.fetchrow(
            f"SELECT {', '.join('ca.' + c.strip() for c in _CA_KEY.split(','))}, c.serial IS NOT NULL AS known,"
            " c.revoked_at AS cert_revoked_at, c.revocation_reason AS cert_revocation_reason FROM cas ca"
            " LEFT JOIN certificates c ON c.ca_id = ca.id AND c.serial = $3"
            f" WHERE ca.{column}_key_hash = $1 AND ca.{column}_name_hash = $2 LIMIT 1", key_hash, name_hash, serial)

    async def refresh_crls(self, signer: CrlSigner, before: datetime, batch: int = 20) -> int:
        """Re-sign the CRLs whose ``next_update`` comes before ``before`` (once across replicas)."""
        async with self.pool.acquire() as conn, conn.transaction():
            cas = await conn.fetch(f"SELECT {_CA_KEY}, crl_number FROM cas WHERE crl_next_update < $1"
                                   " ORDER BY crl_next_update LIMIT $2 FOR UPDATE SKIP LOCKED", before, batch)
            for ca in cas:
                await self._resign_crl(conn, ca, signer)
            return len(cas)

    async def _resign_crl(self, conn: asyncpg.Connection, ca: Row, signer: CrlSigner) -> None:
        revoked = await conn.fetch("SELECT serial, revoked_at, revocation_reason FROM certificates"
                                   " WHERE ca_id = $1 AND revoked_at IS NOT NULL ORDER BY revoked_at", ca["id"])
        number = ca["crl_number"] + 1
        der, next_update = await signer(ca, revoked, number)
        await conn.execute("UPDATE cas SET crl = $2, crl_number = $3, crl_next_update = $4 WHERE id = $1",
                           ca["id"], der, number, next_update)

    # -- roles -------------------------------------------------------------------------------

    async def put_role(self, tenant_id: str, name: str, ca_id: str, spec: dict[str, Any]) -> Row:
        return await self.pool.fetchrow(
            "INSERT INTO roles (tenant_id, name, ca_id, spec) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (tenant_id, name) DO UPDATE SET ca_id = $3, spec = $4, updated_at = now()"
            " RETURNING name, ca_id, spec, created_at, updated_at", tenant_id, name, ca_id, spec)

    async def role(self, tenant_id: str, name: str) -> Row:
        row = await self.pool.fetchrow("SELECT name, ca_id, spec, created_at, updated_at FROM roles"
                                       " WHERE tenant_id = $1 AND name = $2", tenant_id, name)
        if row is None:
            raise RoleNotFound(f"role '{name}' not found", details={"name": name})
        return row

    async def list_roles(self, tenant_id: str, after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            "SELECT name, ca_id, spec, created_at, updated_at FROM roles WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR name > $2) ORDER BY name LIMIT $3", tenant_id, after, limit))

    async def delete_role(self, tenant_id: str, name: str) -> None:
        if await self.pool.fetchval("DELETE FROM roles WHERE tenant_id = $1 AND name = $2 RETURNING 1",
                                    tenant_id, name) is None:
            raise RoleNotFound(f"role '{name}' not found", details={"name": name})

    # -- certificates ------------------------------------------------------------------------

    async def _insert_certificate(self, conn: asyncpg.Connection, cert: dict[str, Any], request_id: str,
                                  max_certificates: int | None = None) -> None:
        tenant_id = cert["tenant_id"]
        if max_certificates is not None:
            # issues of one tenant queue here, so two at the limit can't both pass
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('pki-quota:' || $1))", tenant_id)
            live = await conn.fetchrow(
                "SELECT count(*) AS n, min(not_after) AS first_end FROM certificates"
                " WHERE tenant_id = $1 AND not_after > now()", tenant_id)
            if live["n"] >= max_certificates:
                wait = max(1, int((live["first_end"] - datetime.now(UTC)).total_seconds())) if live["n"] else 60
                raise QuotaExceeded("the tenant's max_certificates quota is reached",
                                    details={"quota": "max_certificates", "limit": max_certificates},
                                    headers={"Retry-After": str(min(wait, 10**9 - 1))})
        await conn.execute(
            "INSERT INTO certificates (serial, tenant_id, ca_id, role, common_name, sans, ip_sans, not_before,"
            " not_after, certificate) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            cert["serial"], tenant_id, cert["ca_id"], cert["role"], cert["common_name"], cert["sans"],
            cert["ip_sans"], cert["not_before"], cert["not_after"], cert["certificate"])
        await self._event(conn, "certificate.issued", tenant_id, request_id, {
            "serial": cert["serial"], "ca_id": cert["ca_id"], "role": cert["role"],
            "common_name": cert["common_name"], "not_after": rfc3339(cert["not_after"])})

    async def insert_certificate(self, cert: dict[str, Any], request_id: str, max_certificates: int | None) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._insert_certificate(conn, cert, request_id, max_certificates)

    async def certificate(self, tenant_id: str, serial: str) -> Row:
        row = await self.pool.fetchrow(f"SELECT {_CERT} FROM certificates WHERE tenant_id = $1 AND serial = $2",
                                       tenant_id, serial)
        if row is None:
            raise CertificateNotFound(f"certificate '{serial}' not found", details={"serial": serial})
        return row

    async def list_certificates(self, tenant_id: str, ca_id: str | None, expiring_before: datetime | None,
                                after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            f"SELECT {_CERT} FROM certificates WHERE tenant_id = $1 AND ($2::text IS NULL OR ca_id = $2)"
            " AND ($3::timestamptz IS NULL OR (not_after <= $3 AND not_after > now()))"
            " AND ($4::text IS NULL OR serial > $4) ORDER BY serial LIMIT $5",
            tenant_id, ca_id, expiring_before, after, limit))

    async def revoke(self, tenant_id: str, serial: str, reason: str, request_id: str, signer: CrlSigner) -> Row:
        """Revoke (once: a second revocation keeps the first's time and reason) and re-sign the CA's CRL."""
        async with self.pool.acquire() as conn, conn.transaction():
            cert = await conn.fetchrow("SELECT ca_id FROM certificates WHERE tenant_id = $1 AND serial = $2",
                                       tenant_id, serial)
            if cert is None:
                raise CertificateNotFound(f"certificate '{serial}' not found", details={"serial": serial})
            if cert["ca_id"] is None:
                raise InvalidRequest("this certificate is from an ACME CA: revoke it there",
                                     details={"serial": serial})
            ca = await conn.fetchrow(f"SELECT {_CA_KEY}, crl_number FROM cas WHERE id = $1 FOR UPDATE",
                                     cert["ca_id"])
            changed = await conn.fetchval(
                "UPDATE certificates SET revoked_at = date_trunc('second', now()), revocation_reason = $3"
                " WHERE tenant_id = $1 AND serial = $2 AND revoked_at IS NULL RETURNING 1",
                tenant_id, serial, reason)
            if changed:
                await self._resign_crl(conn, ca, signer)
                await self._event(conn, "certificate.revoked", tenant_id, request_id,
                                  {"serial": serial, "ca_id": cert["ca_id"], "reason": reason})
            return await conn.fetchrow(f"SELECT {_CERT} FROM certificates WHERE serial = $1", serial)

    async def publish_expiring(self, notice_seconds: int, batch: int = 100) -> int:
        """``certificate.expiring`` once per live certificate within ``notice_seconds`` of its end."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT serial, tenant_id, ca_id, role, common_name, not_after FROM certificates"
                " WHERE expiring_event_at IS NULL AND revoked_at IS NULL"
                " AND not_after <= now() + make_interval(secs => $1)"
                " ORDER BY not_after LIMIT $2 FOR UPDATE SKIP LOCKED", float(notice_seconds), batch)
            for r in rows:
                await conn.execute("UPDATE certificates SET expiring_event_at = now() WHERE serial = $1", r["serial"])
                await self._event(conn, "certificate.expiring", r["tenant_id"], "req_sweeper", {
                    "serial": r["serial"], "ca_id": r["ca_id"], "role": r["role"],
                    "common_name": r["common_name"], "not_after": rfc3339(r["not_after"])})
            return len(rows)

    # -- CSRs --------------------------------------------------------------------------------

    async def insert_csr(self, values: dict[str, Any], request_id: str) -> Row:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO csrs (id, tenant_id, role, csr, subject, sans, submitted_by)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *", values["id"], values["tenant_id"],
                values["role"], values["csr"], values["subject"], values["sans"], values["submitted_by"])
            await self._event(conn, "csr.submitted", values["tenant_id"], request_id, {
                "id": values["id"], "role": values["role"], "subject": values["subject"]})
            return row

    async def csr(self, tenant_id: str, csr_id: str) -> Row:
        row = await self.pool.fetchrow("SELECT * FROM csrs WHERE tenant_id = $1 AND id = $2", tenant_id, csr_id)
        if row is None:
            raise CsrNotFound(f"CSR '{csr_id}' not found", details={"id": csr_id})
        return row

    async def list_csrs(self, tenant_id: str, status: str | None, after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            "SELECT * FROM csrs WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)"
            " AND ($3::text IS NULL OR id > $3) ORDER BY id LIMIT $4", tenant_id, status, after, limit))

    async def decide_csr(self, tenant_id: str, csr_id: str, decided_by: str | None, request_id: str, *,
                         signed: dict[str, Any] | None = None, reason: str | None = None,
                         max_certificates: int | None = None) -> Row:
        """Approve (with the certificate made for it) or reject a pending CSR, once."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT status FROM csrs WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                                      tenant_id, csr_id)
            if row is None:
                raise CsrNotFound(f"CSR '{csr_id}' not found", details={"id": csr_id})
            if row["status"] != "pending":
                raise CsrAlreadyProcessed(f"the CSR was already {row['status']}",
                                          details={"id": csr_id, "status": row["status"]})
            if signed is not None:
                await self._insert_certificate(conn, signed, request_id, max_certificates)
            status = "signed" if signed is not None else "rejected"
            updated = await conn.fetchrow(
                "UPDATE csrs SET status = $3, decided_by = $4, decided_at = now(), reason = $5, serial = $6"
                " WHERE tenant_id = $1 AND id = $2 RETURNING *", tenant_id, csr_id, status, decided_by, reason,
                signed["serial"] if signed else None)
            data = {"id": csr_id, "role": updated["role"]}
            if signed is not None:
                data["serial"] = signed["serial"]
            await self._event(conn, "csr.approved" if signed is not None else "csr.rejected", tenant_id,
                              request_id, data)
            return updated

    # -- trust anchors -----------------------------------------------------------------------

    async def insert_anchor(self, values: dict[str, Any]) -> Row:
        try:
            return await self.pool.fetchrow(
                "INSERT INTO trust_anchors (id, tenant_id, name, subject, not_after, fingerprint_sha256,"
                " certificate) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *", values["id"], values["tenant_id"],
                values["name"], values["subject"], values["not_after"], values["fingerprint_sha256"],
                values["certificate"])
        except asyncpg.UniqueViolationError:
            raise NameConflict(f"a trust anchor named '{values['name']}' exists",
                               details={"name": values["name"]}) from None

    async def anchor(self, tenant_id: str, anchor_id: str) -> Row:
        row = await self.pool.fetchrow("SELECT * FROM trust_anchors WHERE tenant_id = $1 AND id = $2",
                                       tenant_id, anchor_id)
        if row is None:
            raise TrustAnchorNotFound(f"trust anchor '{anchor_id}' not found", details={"id": anchor_id})
        return row

    async def list_anchors(self, tenant_id: str, after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            "SELECT * FROM trust_anchors WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2)"
            " ORDER BY id LIMIT $3", tenant_id, after, limit))

    async def delete_anchor(self, tenant_id: str, anchor_id: str) -> None:
        if await self.pool.fetchval("DELETE FROM trust_anchors WHERE tenant_id = $1 AND id = $2 RETURNING 1",
                                    tenant_id, anchor_id) is None:
            raise TrustAnchorNotFound(f"trust anchor '{anchor_id}' not found", details={"id": anchor_id})

    async def trust_bundle(self, tenant_id: str) -> list[str]:
        """The tenant's root CAs and trust anchors (PEM), oldest first."""
        rows = await self.pool.fetch(
            "SELECT certificate FROM (SELECT certificate, created_at FROM cas WHERE tenant_id = $1"
            " AND parent_id IS NULL UNION ALL SELECT certificate, created_at FROM trust_anchors"
            " WHERE tenant_id = $1) t ORDER BY created_at", tenant_id)
        return [r["certificate"] for r in rows]

