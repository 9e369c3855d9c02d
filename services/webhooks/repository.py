"""SQL of the webhook dispatcher. Endpoint secrets are sealed; deliveries are a queue claimed with leases."""

from __future__ import annotations

import secrets
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from shared.contracts.events import Event
from shared.crypto import Sealed, seal, unseal
from shared.db import outbox
from shared.errors import QuotaExceeded, SubscriptionNotFound, WebhookNotFound
from shared.keyring import ServiceKeyring

CONSUMER = "webhooks"
_WEBHOOK = ("id, tenant_id, url, description, enabled, disabled_reason, failing_since, prev_until, created_at,"
            " updated_at")


def secret_aad(webhook_id: str) -> bytes:
    """What an endpoint's signing secret is bound to."""
    return f"webhooks/secret/{webhook_id}".encode()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class WebhooksStore(Protocol):
    """What the API handlers need of storage (``WebhooksRepository``; the unit tests' in-memory fake)."""

    async def create_webhook(self, tenant_id: str, url: str, description: str | None, enabled: bool,
                             secret: str, max_webhooks: int | None) -> Any: ...

    async def webhook(self, tenant_id: str, webhook_id: str) -> Any: ...

    async def list_webhooks(self, tenant_id: str, after: str | None, limit: int) -> list[Any]: ...

    async def update_webhook(self, tenant_id: str, webhook_id: str, url: str | None, description: str | None,
                             enabled: bool | None) -> Any: ...

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> None: ...

    async def rotate_secret(self, tenant_id: str, webhook_id: str, secret: str, overlap: float) -> Any: ...

    async def add_ping(self, tenant_id: str, webhook_id: str, request_id: str) -> str: ...

    async def create_subscription(self, tenant_id: str, webhook_id: str, event_types: list[str],
                                  path_pattern: str | None, created_by: str | None) -> Any: ...

    async def subscription(self, tenant_id: str, subscription_id: str) -> Any: ...

    async def list_subscriptions(self, tenant_id: str, after: str | None, limit: int) -> list[Any]: ...

    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> None: ...

    async def deliveries(self, tenant_id: str, webhook_id: str, after: str | None, limit: int) -> list[Any]: ...

    async def delivery(self, tenant_id: str, webhook_id: str, delivery_id: str) -> tuple[Any, list[Any]]: ...

    async def retry(self, tenant_id: str, webhook_id: str, delivery_id: str) -> None: ...


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt's outcome: what is recorded about it."""

    delivery_id: str
    response_status: int | None
    error_code: str | None
    duration_ms: int
    body: str | None
    #: seconds until the next attempt; ``None``: none (succeeded, gone, or out of retries)
    next_in: float | None
    #: the delivery's ``updated_at`` when it was claimed: changed since, a retry was asked for meanwhile
    claimed_state: datetime
    #: the answer's headers kept (``domain.kept_headers``); ``None`` without an answer
    headers: dict[str, str] | None = None

    @property
    def succeeded(self) -> bool:
        return self.error_code is None

    @property
    def status(self) -> str:
        return "succeeded" if self.succeeded else ("pending" if self.next_in is not None else "failed")


class WebhooksRepository:
    def __init__(self, pool: asyncpg.Pool, kms: ServiceKeyring, schema: str) -> None:
        self.pool = pool
        self.kms = kms
        self.schema = schema

    # -- webhooks ----------------------------------------------------------------

    async def create_webhook(self, tenant_id: str, url: str, description: str | None, enabled: bool,
                             secret: str, max_webhooks: int | None) -> asyncpg.Record:
        webhook_id = new_id("whk")
        sealed = seal(self.kms.tenant(tenant_id), secret.encode(), secret_aad(webhook_id))
        async with self.pool.acquire() as conn, conn.transaction():
            if max_webhooks is not None:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('webhooks-quota:' || $1))", tenant_id)
                if await conn.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant_id) >= max_webhooks:
                    raise QuotaExceeded("the tenant's max_webhooks quota is reached",
                                        details={"quota": "max_webhooks", "limit": max_webhooks})
            return await conn.fetchrow(
                "INSERT INTO webhooks (id, tenant_id, url, description, enabled, kek_id, wrapped_key, nonce,"
                f" ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_WEBHOOK}",
                webhook_id, tenant_id, url, description, enabled, sealed.kek_id, sealed.wrapped_key, sealed.nonce,
                sealed.ciphertext)

    async def webhook(self, tenant_id: str, webhook_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow(f"SELECT {_WEBHOOK} FROM webhooks WHERE tenant_id = $1 AND id = $2",
                                       tenant_id, webhook_id)
        if row is None:
            raise WebhookNotFound(details={"webhook_id": webhook_id[:64]})
        return row

    async def list_webhooks(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            f"SELECT {_WEBHOOK} FROM webhooks WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2)"
            " ORDER BY id LIMIT $3", tenant_id, after, limit)

    async def update_webhook(self, tenant_id: str, webhook_id: str, url: str | None, description: str | None,
                             enabled: bool | None) -> asyncpg.Record:
        row = await self.pool.fetchrow(
            "UPDATE webhooks SET url = coalesce($3, url), description = coalesce($4, description),"
            " enabled = coalesce($5, enabled),"
            " disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END,"
            " failing_since = CASE WHEN $5 THEN NULL ELSE failing_since END, updated_at = now()"
            f" WHERE tenant_id = $1 AND id = $2 RETURNING {_WEBHOOK}", tenant_id, webhook_id, url, description, enabled)
        if row is None:
            raise WebhookNotFound(details={"webhook_id": webhook_id[:64]})
        return row

    async def delete_webhook(self, tenant_id: str, webhook_id: str) -> None:
        status = await self.pool.execute("DELETE FROM webhooks WHERE tenant_id = $1 AND id = $2", tenant_id, webhook_id)
        if status.endswith(" 0"):
            raise WebhookNotFound(details={"webhook_id": webhook_id[:64]})

    async def rotate_secret(self, tenant_id: str, webhook_id: str, secret: str, overlap: float) -> asyncpg.Record:
        """A new secret; the old one keeps signing (beside it) for ``overlap`` seconds."""
        sealed = seal(self.kms.tenant(tenant_id), secret.encode(), secret_aad(webhook_id))
        row = await self.pool.fetchrow(
            "UPDATE webhooks SET prev_kek_id = kek_id, prev_wrapped_key = wrapped_key, prev_nonce = nonce,"
            " prev_ciphertext = ciphertext, prev_until = now() + make_interval(secs => $7),"
            " kek_id = $3, wrapped_key = $4, nonce = $5, ciphertext = $6, updated_at = now()"
            f" WHERE tenant_id = $1 AND id = $2 RETURNING {_WEBHOOK}",
            tenant_id, webhook_id, sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext, overlap)
        if row is None:
            raise WebhookNotFound(details={"webhook_id": webhook_id[:64]})
        return row

    def secrets_in_force(self, row: Any) -> list[str]:
        """The current secret, and the previous one while its overlap lasts."""
        kms = self.kms.tenant(row["tenant_id"])
        found = [unseal(kms, Sealed(row["kek_id"], row["wrapped_key"], row["nonce"], row["ciphertext"]),
                        secret_aad(row["webhook_id"])).decode()]
        if row["prev_kek_id"] and row["prev_until"] and row["prev_until"] > datetime.now(UTC):
            found.append(unseal(kms, Sealed(row["prev_kek_id"], row["prev_wrapped_key"], row["prev_nonce"],
                                                 row["prev_ciphertext"]), secret_aad(row["webhook_id"])).decode())
        return found

    # -- subscriptions -------------------------------------------------------------

    async def create_subscription(self, tenant_id: str, webhook_id: str, event_types: list[str],
                                  path_pattern: str | None, created_by: str | None) -> asyncpg.Record:
        await self.webhook(tenant_id, webhook_id)
        return await self.pool.fetchrow(
            "INSERT INTO subscriptions (id, tenant_id, webhook_id, event_types, path_pattern, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            new_id("sub"), tenant_id, webhook_id, event_types, path_pattern, created_by)

    async def subscription(self, tenant_id: str, subscription_id: str) -> asyncpg.Record:
        row = await self.pool.fetchrow("SELECT * FROM subscriptions WHERE tenant_id = $1 AND id = $2",
                                       tenant_id, subscription_id)
        if row is None:
            raise SubscriptionNotFound(details={"subscription_id": subscription_id[:64]})
        return row

    async def list_subscriptions(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM subscriptions WHERE tenant_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3",
            tenant_id, after, limit)

    async def delete_subscription(self, tenant_id: str, subscription_id: str) -> None:
        status = await self.pool.execute("DELETE FROM subscriptions WHERE tenant_id = $1 AND id = $2",
                                         tenant_id, subscription_id)
        if status.endswith(" 0"):
            raise SubscriptionNotFound(details={"subscription_id": subscription_id[:64]})

    # -- events → deliveries ---------------------------------------------------------

    async def subscriptions_of(self, tenant_ids: list[str]) -> list[list[asyncpg.Record]]:
        """The subscriptions to enabled webhooks of each tenant named (in order): one query for the tenants
        of all the events being handled at once (``shared.groups``), instead of one per event."""
        rows = await self.pool.fetch(
            "SELECT s.tenant_id, s.id, s.webhook_id, s.event_types, s.path_pattern, s.created_by FROM subscriptions s"
            " JOIN webhooks w ON w.id = s.webhook_id WHERE s.tenant_id = ANY($1::text[]) AND w.enabled",
            sorted(set(tenant_ids)))
        by_tenant: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for row in rows:
            by_tenant[row["tenant_id"]].append(row)
        return [by_tenant.get(t, []) for t in tenant_ids]

    async def fan_out(self, event: Event, subscription_ids: list[str]) -> int:
        """One delivery per subscription named (still there and enabled); a redelivered event adds none."""
        return (await self.fan_out_many([(event, subscription_ids)]))[0]

    async def fan_out_many(self, items: list[tuple[Event, list[str]]]) -> list[int]:
        """``fan_out`` for several events in one transaction: their inbox claims in one statement, their
        deliveries in another (deliveries added per item; an event claimed before, or twice here, adds none
        the second time)."""
        wanted = [(event, ids) for event, ids in items if ids]
        if not wanted:
            return [0] * len(items)  # the common case: nobody (allowed) listens, nothing to write
        async with self.pool.acquire() as conn, conn.transaction():
            claimed = {str(r["event_id"]) for r in await conn.fetch(
                "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING"
                " RETURNING event_id", CONSUMER, list({uuid.UUID(e.id) for e, _ in wanted}))}
            sub_ids: list[str] = []
            event_ids: list[str] = []
            fresh: dict[str, Event] = {}
            for event, ids in wanted:
                if event.id in claimed and event.id not in fresh:
                    fresh[event.id] = event
                    sub_ids += ids
                    event_ids += [event.id] * len(ids)
            rows: list[asyncpg.Record] = []
            payloads = {event_id: event.model_dump(mode="json") for event_id, event in fresh.items()}  # once each
            if sub_ids:
                rows = await conn.fetch(
                    "INSERT INTO deliveries (id, tenant_id, webhook_id, subscription_id, event_id, event_type,"
                    " payload) SELECT x.delivery_id, s.tenant_id, s.webhook_id, s.id, x.event_id::uuid, x.event_type,"
                    " x.payload FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[])"
                    " AS x(subscription_id, delivery_id, event_id, event_type, payload)"
                    " JOIN subscriptions s ON s.id = x.subscription_id JOIN webhooks w ON w.id = s.webhook_id"
                    " WHERE w.enabled ON CONFLICT DO NOTHING RETURNING event_id",
                    sub_ids, [new_id("msg") for _ in sub_ids], event_ids,
                    [fresh[e].type for e in event_ids], [payloads[e] for e in event_ids])
            if rows:
                await conn.execute("SELECT pg_notify($1, '')", f"coffer_deliveries_{self.schema}")
        added: dict[str, int] = {}
        for row in rows:
            added[str(row["event_id"])] = added.get(str(row["event_id"]), 0) + 1
        counted: set[str] = set()
        out = []
        for event, _ in items:  # an event twice in the group: its deliveries count once
            out.append(added.get(event.id, 0) if event.id not in counted else 0)
            counted.add(event.id)
        return out

    async def add_ping(self, tenant_id: str, webhook_id: str, request_id: str) -> str:
        await self.webhook(tenant_id, webhook_id)
        event = Event(type="webhook.ping", tenant_id=tenant_id, request_id=request_id, data={"webhook_id": webhook_id})
        delivery_id = new_id("msg")
        await self.pool.execute(
            "INSERT INTO deliveries (id, tenant_id, webhook_id, event_id, event_type, payload)"
            " VALUES ($1, $2, $3, $4, $5, $6)", delivery_id, tenant_id, webhook_id, event.id, event.type,
            event.model_dump(mode="json"))
        return delivery_id

    # -- the delivery queue ------------------------------------------------------------

    async def claim_due(self, limit: int, lease: float, saturated: list[str], per_endpoint: int
                        ) -> list[asyncpg.Record]:
        """Due deliveries, leased to this worker (another replica skips them until the lease ends).

        At most ``per_endpoint`` per endpoint, none for endpoints this worker
        already saturates: one slow endpoint can't take every slot.
        """
        return await self.pool.fetch(
            "WITH ranked AS (SELECT id, row_number() OVER (PARTITION BY webhook_id ORDER BY next_attempt_at) AS rn"
            " FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()"
            " AND (lease_until IS NULL OR lease_until < now()) AND NOT (webhook_id = ANY($3::text[]))),"
            " due AS (SELECT d.id FROM deliveries d JOIN ranked r ON r.id = d.id WHERE r.rn <= $4"
            " ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE OF d SKIP LOCKED)"
            " UPDATE deliveries d SET lease_until = now() + make_interval(secs => $2) FROM due, webhooks w"
            " WHERE d.id = due.id AND w.id = d.webhook_id"
            " RETURNING d.id, d.tenant_id, d.webhook_id, d.event_type, d.payload, d.attempt_count, d.updated_at,"
            " w.url, w.enabled,"
            " w.kek_id, w.wrapped_key, w.nonce, w.ciphertext, w.prev_kek_id, w.prev_wrapped_key, w.prev_nonce,"
            " w.prev_ciphertext, w.prev_until", limit, lease, saturated, per_endpoint)

    async def record_attempts(self, attempts: list[Attempt]) -> list[None]:
        """Each attempt, its delivery's new state and, after a success, its endpoint no longer failing: one
        statement for the group (``shared.groups``). Per delivery that was three statements in two
        transactions, then one statement (28 %, then 12 % of the dispatcher's CPU in fan-out profiles).

        A delivery retried through the API while this attempt was in flight (its ``updated_at`` moved
        since the claim) keeps the retry: the attempt is recorded, the delivery stays pending and due.
        """
        if not attempts:
            return []
        await self.pool.execute(
            "WITH o AS (SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::int[], $5::text[], $6::text[],"
            " $7::float8[], $8::boolean[], $9::timestamptz[], $10::jsonb[]) WITH ORDINALITY AS o(delivery_id,"
            " response_status, error_code, duration_ms, body, status, next_in, succeeded, claimed_state, headers, n)),"
            " a AS (INSERT INTO attempts (delivery_id, response_status, error_code, duration_ms, response_body,"
            " response_headers) SELECT delivery_id, response_status, error_code, duration_ms, body, headers FROM o"
            " ORDER BY n),"
            " d AS (UPDATE deliveries SET attempt_count = attempt_count + 1, lease_until = NULL, updated_at = now(),"
            " status = CASE WHEN deliveries.updated_at = o.claimed_state THEN o.status ELSE deliveries.status END,"
            " next_attempt_at = CASE WHEN deliveries.updated_at = o.claimed_state"
            " THEN now() + make_interval(secs => o.next_in) ELSE deliveries.next_attempt_at END"
            " FROM o WHERE deliveries.id = o.delivery_id RETURNING deliveries.webhook_id, o.succeeded)"
            " UPDATE webhooks w SET failing_since = NULL FROM (SELECT DISTINCT webhook_id FROM d WHERE succeeded) ok"
            " WHERE w.id = ok.webhook_id AND w.failing_since IS NOT NULL",
            [a.delivery_id for a in attempts], [a.response_status for a in attempts],
            [a.error_code for a in attempts], [a.duration_ms for a in attempts], [a.body for a in attempts],
            [a.status for a in attempts], [a.next_in or 0.0 for a in attempts], [a.succeeded for a in attempts],
            [a.claimed_state for a in attempts], [a.headers for a in attempts])
        return [None] * len(attempts)

    async def webhook_failed(self, webhook_id: str, disable_after: float, gone: bool) -> bool:
        """Note a failure; disable the endpoint if it answered 410 or has failed for ``disable_after`` seconds.

        Returns whether it was disabled now (then ``webhook.disabled`` is in the outbox).
        """
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE webhooks SET failing_since = coalesce(failing_since, now()) WHERE id = $1 AND enabled"
                " RETURNING tenant_id, failing_since", webhook_id)
            if row is None:
                return False
            too_long = datetime.now(UTC) - row["failing_since"] >= timedelta(seconds=disable_after)
            if not (gone or too_long):
                return False
            reason = "endpoint answered 410 Gone" if gone else f"failing for more than {int(disable_after)} s"
            await conn.execute("UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = now()"
                               " WHERE id = $1", webhook_id, reason)
            await outbox.add(conn, Event(type="webhook.disabled", tenant_id=row["tenant_id"],
                                         data={"webhook_id": webhook_id, "reason": reason}), schema=self.schema)
            return True

    async def pending_count(self) -> int:
        return int(await self.pool.fetchval("SELECT count(*) FROM deliveries WHERE status = 'pending'"))

    # -- deliveries API -------------------------------------------------------------------

    async def deliveries(self, tenant_id: str, webhook_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        await self.webhook(tenant_id, webhook_id)
        return await self.pool.fetch(
            "SELECT * FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2 AND ($3::text IS NULL OR id > $3)"
            " ORDER BY id LIMIT $4", tenant_id, webhook_id, after, limit)

    async def delivery(self, tenant_id: str, webhook_id: str, delivery_id: str) -> tuple[Any, list[Any]]:
        row = await self.pool.fetchrow("SELECT * FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3",
                                       tenant_id, webhook_id, delivery_id)
        if row is None:
            raise WebhookNotFound("delivery not found", details={"delivery_id": delivery_id[:64]})
        attempts = await self.pool.fetch("SELECT * FROM attempts WHERE delivery_id = $1 ORDER BY id", delivery_id)
        return row, attempts

    async def retry(self, tenant_id: str, webhook_id: str, delivery_id: str) -> None:
        """Due again now. A lease is left as it is: an attempt in flight finishes first (never two at once to
        one delivery), and its outcome then leaves the delivery pending (``record_attempts``)."""
        status = await self.pool.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()"
            " WHERE tenant_id = $1 AND webhook_id = $2 AND id = $3", tenant_id, webhook_id, delivery_id)
        if status.endswith(" 0"):
            raise WebhookNotFound("delivery not found", details={"delivery_id": delivery_id[:64]})
        await self.pool.execute("SELECT pg_notify($1, '')", f"coffer_deliveries_{self.schema}")

