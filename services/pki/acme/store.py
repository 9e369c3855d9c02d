"""The ACME client's SQL: accounts, DNS providers, orders, and the orders' leased queue.

Every read names the tenant (another tenant's id is not found). Secrets are
sealed before they reach a statement: an account's key, a provider's TSIG
secret, a certificate's private key. An order's state changes and its events
commit together (outbox).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from shared.contracts.events import Event
from shared.contracts.times import rfc3339
from shared.crypto import Sealed
from shared.db import outbox
from shared.errors import AcmeAccountNotFound, AcmeOrderNotFound, DnsProviderNotFound, InvalidRequest, NameConflict

Row = asyncpg.Record
_ACCOUNT = "id, directory_url, email, account_url, status, eab_kid, created_at"
_PROVIDER = "id, name, type, config, created_at"
_ORDER = ("o.id, o.account_id, o.dns_provider_id, o.domains, o.status, o.problem, o.serial, c.not_after,"
          " o.renew_at, o.renewals, o.created_by, o.created_at, o.updated_at")
_ORDER_FROM = "acme_orders o LEFT JOIN certificates c ON c.serial = o.serial"
#: how long a claim lasts; each step of an order renews it
LEASE_SECONDS = 300.0


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def sealed_of(row: Row) -> Sealed:
    """The sealed value a row read ``with_key`` (or an order's key) holds."""
    return Sealed(row["kek_id"], row["wrapped_key"], row["nonce"], row["ciphertext"])


def _no_account(account_id: str) -> AcmeAccountNotFound:
    return AcmeAccountNotFound(f"ACME account '{account_id[:64]}' not found", details={"id": account_id[:64]})


def _no_provider(provider_id: str) -> DnsProviderNotFound:
    return DnsProviderNotFound(f"DNS provider '{provider_id[:64]}' not found", details={"id": provider_id[:64]})


def _no_order(order_id: str) -> AcmeOrderNotFound:
    return AcmeOrderNotFound(f"ACME order '{order_id[:64]}' not found", details={"id": order_id[:64]})


_KEY_COLUMNS = ", tenant_id, kek_id, wrapped_key, nonce, ciphertext"  # sealed under the tenant's KEK


def account_aad(account_id: str) -> bytes:
    return b"acme-account:" + account_id.encode()


def provider_aad(provider_id: str) -> bytes:
    return b"acme-dns:" + provider_id.encode()


def order_aad(order_id: str) -> bytes:
    return b"acme-order:" + order_id.encode()


class AcmeStore:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def event(self, conn: asyncpg.Connection, kind: str, tenant_id: str, request_id: str,
                    data: dict[str, Any]) -> None:
        await outbox.add(conn, Event(type=kind, tenant_id=tenant_id, request_id=request_id, data=data),
                         schema=self.schema)

    # -- accounts ----------------------------------------------------------------------------------

    async def insert_account(self, values: dict[str, Any], sealed: Sealed) -> Row:
        return await self.pool.fetchrow(
            "INSERT INTO acme_accounts (id, tenant_id, directory_url, email, ca_bundle, account_url, status,"
            " eab_kid, kek_id, wrapped_key, nonce, ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
            f" $11, $12) RETURNING {_ACCOUNT}", values["id"], values["tenant_id"], values["directory_url"],
            values["email"], values["ca_bundle"], values["account_url"], values["status"], values["eab_kid"],
            sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)

    async def _one(self, table: str, columns: str, tenant_id: str, row_id: str, missing: Exception) -> Row:
        row = await self.pool.fetchrow(f"SELECT {columns} FROM {table} WHERE tenant_id = $1 AND id = $2",
                                       tenant_id, row_id)
        if row is None:
            raise missing
        return row

    async def _page(self, table: str, columns: str, tenant_id: str, after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            f"SELECT {columns} FROM {table} WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2)"
            " ORDER BY id LIMIT $3", tenant_id, after, limit))

    async def account(self, tenant_id: str, account_id: str, *, with_key: bool = False) -> Row:
        columns = _ACCOUNT + (", ca_bundle" + _KEY_COLUMNS if with_key else "")
        return await self._one("acme_accounts", columns, tenant_id, account_id, _no_account(account_id))

    async def list_accounts(self, tenant_id: str, after: str | None, limit: int) -> list[Row]:
        return await self._page("acme_accounts", _ACCOUNT, tenant_id, after, limit)

    async def delete_account(self, tenant_id: str, account_id: str) -> None:
        await self._delete("acme_accounts", "account_id", tenant_id, account_id, _no_account(account_id))

    async def _delete(self, table: str, column: str, tenant_id: str, row_id: str, missing: Exception) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(f"SELECT 1 FROM {table} WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                                   tenant_id, row_id) is None:
                raise missing
            if await conn.fetchval(f"SELECT 1 FROM acme_orders WHERE {column} = $1 LIMIT 1", row_id):
                raise InvalidRequest("orders use it: delete them first", details={"id": row_id})
            await conn.execute(f"DELETE FROM {table} WHERE id = $1", row_id)

    # -- DNS providers -----------------------------------------------------------------------------

    async def insert_provider(self, values: dict[str, Any], sealed: Sealed) -> Row:
        try:
            return await self.pool.fetchrow(
                "INSERT INTO acme_dns_providers (id, tenant_id, name, type, config, kek_id, wrapped_key, nonce,"
                f" ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_PROVIDER}",
                values["id"], values["tenant_id"], values["name"], values["type"], values["config"],
                sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext)
        except asyncpg.UniqueViolationError:
            raise NameConflict(f"a DNS provider named '{values['name']}' exists",
                               details={"name": values["name"]}) from None

    async def provider(self, tenant_id: str, provider_id: str, *, with_key: bool = False) -> Row:
        columns = _PROVIDER + (_KEY_COLUMNS if with_key else "")
        return await self._one("acme_dns_providers", columns, tenant_id, provider_id, _no_provider(provider_id))

    async def list_providers(self, tenant_id: str, after: str | None, limit: int) -> list[Row]:
        return await self._page("acme_dns_providers", _PROVIDER, tenant_id, after, limit)

    async def delete_provider(self, tenant_id: str, provider_id: str) -> None:
        await self._delete("acme_dns_providers", "dns_provider_id", tenant_id, provider_id,
                           _no_provider(provider_id))

    # -- orders ------------------------------------------------------------------------------------

    async def insert_order(self, values: dict[str, Any]) -> Row:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO acme_orders (id, tenant_id, account_id, dns_provider_id, domains, status, order_url,"
                " due_at, created_by) VALUES ($1, $2, $3, $4, $5, 'pending', $6, now(), $7)",
                values["id"], values["tenant_id"], values["account_id"], values["dns_provider_id"],
                values["domains"], values["order_url"], values["created_by"])
            return await conn.fetchrow(f"SELECT {_ORDER} FROM {_ORDER_FROM} WHERE o.id = $1", values["id"])

    async def order(self, tenant_id: str, order_id: str) -> Row:
        row = await self.pool.fetchrow(f"SELECT {_ORDER} FROM {_ORDER_FROM} WHERE o.tenant_id = $1 AND o.id = $2",
                                       tenant_id, order_id)
        if row is None:
            raise _no_order(order_id)
        return row

    async def list_orders(self, tenant_id: str, status: str | None, after: str | None, limit: int) -> list[Row]:
        return list(await self.pool.fetch(
            f"SELECT {_ORDER} FROM {_ORDER_FROM} WHERE o.tenant_id = $1 AND ($2::text IS NULL OR o.status = $2)"
            " AND ($3::text IS NULL OR o.id > $3) ORDER BY o.id LIMIT $4", tenant_id, status, after, limit))

    async def order_key(self, tenant_id: str, order_id: str) -> Row:
        row = await self.pool.fetchrow(
            "SELECT o.id, o.serial, o.kek_id, o.wrapped_key, o.nonce, o.ciphertext, c.certificate, c.chain,"
            f" c.not_after FROM {_ORDER_FROM} WHERE o.tenant_id = $1 AND o.id = $2", tenant_id, order_id)
        if row is None:
            raise _no_order(order_id)
        return row

    async def delete_order(self, tenant_id: str, order_id: str) -> None:
        """The order and its renewals end; its certificates stay among the PKI's."""
        if await self.pool.fetchval("DELETE FROM acme_orders WHERE tenant_id = $1 AND id = $2 RETURNING 1",
                                    tenant_id, order_id) is None:
            raise _no_order(order_id)

    # -- the queue (shared.jobs.LeasedQueue's claim; the work is ``OrderWorker``'s) -----------------

    async def claim(self, free: int) -> Sequence[Row]:
        """Orders to run: new ones and retries that are due, and valid ones whose renewal time came."""
        return list(await self.pool.fetch(
            "UPDATE acme_orders SET lease_until = now() + make_interval(secs => $2), attempts = attempts + 1,"
            " status = CASE status WHEN 'pending' THEN 'processing' ELSE status END, updated_at = now()"
            " WHERE id IN (SELECT id FROM acme_orders WHERE (lease_until IS NULL OR lease_until < now()) AND"
            " ((status IN ('pending', 'processing') AND due_at <= now())"
            " OR (status = 'valid' AND (renew_at <= now() OR ari_check_at <= now())))"
            " ORDER BY coalesce(due_at, least(renew_at, ari_check_at)) LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, tenant_id, account_id, dns_provider_id, domains, status, order_url, serial, attempts,"
            " renewals, renew_at", free, LEASE_SECONDS))

    async def reschedule(self, order_id: str, renew_at: datetime, ari_check_at: datetime | None) -> None:
        """After an ARI check that did not call for renewal now: the (maybe moved) renewal time, the next check."""
        await self.pool.execute(
            "UPDATE acme_orders SET renew_at = $2, ari_check_at = $3, lease_until = NULL, attempts = 0,"
            " updated_at = now() WHERE id = $1", order_id, renew_at, ari_check_at)

    async def extend(self, order_id: str, order_url: str | None = None) -> None:
        await self.pool.execute(
            "UPDATE acme_orders SET lease_until = now() + make_interval(secs => $2),"
            " order_url = coalesce($3, order_url) WHERE id = $1", order_id, LEASE_SECONDS, order_url)

    async def retry(self, order_id: str, at: datetime, problem: dict[str, Any] | None, *, renewal: bool) -> None:
        """Try again at ``at`` (the lease ends; the status stays)."""
        await self.pool.execute(
            f"UPDATE acme_orders SET lease_until = NULL, problem = $3, updated_at = now(),"
            f" {'renew_at' if renewal else 'due_at'} = $2 WHERE id = $1", order_id, at, problem)

    async def issued(self, item: Row, cert: dict[str, Any], sealed: Sealed, renew_at: datetime,
                     ari_check_at: datetime | None) -> None:
        """The certificate stored among the PKI's, its key sealed on the order, the order valid."""
        async with self.pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM acme_orders WHERE id = $1 FOR UPDATE", item["id"]) is None:
                return  # deleted while it ran
            await conn.execute(
                "INSERT INTO certificates (serial, tenant_id, ca_id, role, common_name, sans, ip_sans, not_before,"
                " not_after, certificate, chain, acme_order_id) VALUES ($1, $2, NULL, NULL, $3, $4, '{}', $5, $6,"
                " $7, $8, $9) ON CONFLICT (serial) DO NOTHING", cert["serial"], item["tenant_id"],
                cert["common_name"], cert["sans"], cert["not_before"], cert["not_after"], cert["certificate"],
                cert["chain"], item["id"])
            renewal = item["serial"] is not None
            await conn.execute(
                "UPDATE acme_orders SET status = 'valid', serial = $2, renew_at = $3, problem = NULL,"
                " renewal_failed_at = NULL, attempts = 0, order_url = NULL, due_at = NULL, lease_until = NULL,"
                " renewals = renewals + $4, kek_id = $5, wrapped_key = $6, nonce = $7, ciphertext = $8,"
                " ari_check_at = $9, updated_at = now() WHERE id = $1", item["id"], cert["serial"], renew_at,
                int(renewal), sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext, ari_check_at)
            data = {"order_id": item["id"], "serial": cert["serial"], "domains": list(item["domains"]),
                    "not_after": rfc3339(cert["not_after"]), "renewal": renewal}
            await self.event(conn, "certificate.issued", item["tenant_id"], "req_acme",
                             {"serial": cert["serial"], "ca_id": None, "role": None,
                              "common_name": cert["common_name"], "not_after": rfc3339(cert["not_after"]),
                              "acme_order_id": item["id"]})
            await self.event(conn, "acme.order.completed", item["tenant_id"], "req_acme", data)

    async def failed(self, item: Row, problem: dict[str, Any], retry_at: datetime | None) -> None:
        """A first order ends ``invalid``; a failed renewal keeps the order ``valid`` (its certificate still
        serves) and is tried again at ``retry_at``. Either way ``acme.order.failed``."""
        renewal = item["serial"] is not None
        async with self.pool.acquire() as conn, conn.transaction():
            if renewal:
                done = await conn.fetchval(
                    "UPDATE acme_orders SET problem = $2, renew_at = $3, renewal_failed_at = now(), order_url = NULL,"
                    " lease_until = NULL, updated_at = now() WHERE id = $1 RETURNING 1", item["id"], problem, retry_at)
            else:
                done = await conn.fetchval(
                    "UPDATE acme_orders SET status = 'invalid', problem = $2, due_at = NULL, lease_until = NULL,"
                    " updated_at = now() WHERE id = $1 RETURNING 1", item["id"], problem)
            if done:
                await self.event(conn, "acme.order.failed", item["tenant_id"], "req_acme", {
                    "order_id": item["id"], "domains": list(item["domains"]), "renewal": renewal,
                    "problem": {k: problem[k] for k in ("type", "detail") if k in problem},
                    "next_attempt_at": rfc3339(retry_at) if retry_at else None})
