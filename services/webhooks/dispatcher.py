"""Delivering: events become deliveries, deliveries become signed HTTP POSTs.

- ``on_event`` (the ``webhooks`` consumer of every event, ``#``) writes one
  delivery per matching subscription, idempotently (inbox + unique index).
- ``Dispatcher`` is a leased queue (``shared.jobs``): it claims due
  deliveries with a lease (``SKIP LOCKED``, so replicas share the queue and a
  restarted replica picks up what a dead one held once its lease ends), posts
  them concurrently — at most ``per_endpoint`` at a time to one endpoint, so a
  slow one can't starve the others — and records every attempt. Failures retry on the schedule with
  jitter; ``Retry-After`` is honoured; 410 or failing for too long disables
  the endpoint (``webhook.disabled``).

An attempt keeps the answer's status, a bounded set of its headers and at
most 1 KiB of its body, and no body at all from a receiver reached through
the operator's private allow-list; an attempt without an answer reads
"could not connect" whatever the cause (``domain.no_answer``; the cause is
in the log).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import structlog
from yarl import URL

from services.webhooks import domain
from services.webhooks.repository import Attempt, WebhooksRepository
from services.webhooks.ssrf import check_url
from shared.context import RequestContext
from shared.contracts.events import Event, resource_of
from shared.errors import CofferError
from shared.failures import statement_refused
from shared.groups import Groups
from shared.jobs import QueueRunner
from shared.outbound import Lookup, OutboundPolicy, guarded_connector, system_lookup
from shared.reach import Reach, cause, note_peers, read_at_most, recording, watching

log = structlog.get_logger("coffer.webhooks")
#: may each of these identities list this resource now? (``iam.may`` over the bus)
MayList = Callable[[list[str], str, RequestContext], Awaitable[list[bool]]]
USER_AGENT = "Coffer-Webhooks/0.1"


class Dispatcher:
    def __init__(self, repo: WebhooksRepository, policy: OutboundPolicy, may_list: MayList, *,
                 schedule: tuple[float, ...],
                 timeout: float, disable_after: float, poll_interval: float, per_endpoint: int,
                 concurrency: int, lookup: Lookup = system_lookup) -> None:
        self.repo = repo
        self.policy = policy
        self.may_list = may_list
        self.schedule = schedule
        self.timeout = timeout
        self.disable_after = disable_after
        self.poll_interval = poll_interval
        self.per_endpoint = per_endpoint
        self.concurrency = concurrency
        self.lookup = lookup
        self._in_flight: dict[str, int] = defaultdict(int)
        self._session: aiohttp.ClientSession | None = None
        # events handled at once share their subscriptions' lookup and their deliveries' transaction, and
        # outcomes of deliveries one statement (shared/groups.py); when the database refuses an outcomes'
        # statement (a delivery vanished), its outcomes are written again one by one
        self._lookups: Groups[str, list[Any]] = Groups(repo.subscriptions_of, name="webhook-lookups")
        self._fan_out: Groups[tuple[Event, list[str]], int] = Groups(repo.fan_out_many, name="webhook-fan-out")
        self._attempts: Groups[Attempt, None] = Groups(repo.record_attempts, name="webhook-attempts",
                                                       retry_alone=statement_refused)
        self._runner: QueueRunner[Any] = QueueRunner(self, name="webhook-deliveries", concurrency=concurrency,
                                                     poll_interval=poll_interval)

    def wake(self, *_: Any) -> None:
        self._runner.wake()

    async def on_event(self, event: Event, ctx: RequestContext) -> None:
        """Deliveries for the matching subscriptions whose owner may ``list`` the event's resource now.

        A subscription to ``secret.*`` must not reveal paths its owner can't
        list (or no longer can): the gateway is asked (``iam.may``) for every
        owner before anything is written. If it can't answer, the event is
        retried; nothing is delivered unchecked.
        """
        if event.tenant_id is None or event.type == "tenant.deleted":  # that tenant's webhooks are going
            return
        listening = await self._lookups.add(event.tenant_id)
        payload = {"type": event.type, "data": event.data}
        subs = [s for s in listening
                if domain.subscription_matches(list(s["event_types"]), s["path_pattern"], payload)]
        if not subs:
            return
        owners = sorted({s["created_by"] for s in subs if s["created_by"]})
        allowed = dict(zip(owners, await self.may_list(owners, resource_of(event), ctx), strict=True))
        if await self._fan_out.add((event, [s["id"] for s in subs if allowed.get(s["created_by"])])):
            self.wake()

    async def run(self) -> None:
        # every address resolved and every connection's peer are noted in the attempt's Reach: what the
        # attempt may keep of the answer depends on them (shared.reach)
        connector = note_peers(guarded_connector(self.policy, recording(self.lookup), limit=self.concurrency,
                                                 limit_per_host=self.per_endpoint))
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout),
                                              headers={"User-Agent": USER_AGENT}, auto_decompress=False)
        try:
            await self._runner.run()
        finally:
            await self._session.close()

    # -- the leased queue of deliveries (shared.jobs.QueueRunner runs it) -------------------

    async def claim(self, free: int) -> list[Any]:
        """Due deliveries, at most ``per_endpoint`` per endpoint: one slow endpoint can't take every slot."""
        saturated = [w for w, n in self._in_flight.items() if n >= self.per_endpoint]
        # long enough for one attempt and its bookkeeping; a worker that died
        # holding a delivery gives it back this soon
        rows = await self.repo.claim_due(free, self.timeout + 5, saturated, self.per_endpoint)
        for row in rows:
            self._in_flight[row["webhook_id"]] += 1
        return list(rows)

    async def work(self, row: Any) -> None:
        released = False

        def release() -> None:
            """The endpoint's slot is for the request to it, not for our bookkeeping after its answer: freed
            as soon as the answer is in, so the next delivery to it starts while this one is recorded."""
            nonlocal released
            if released:
                return
            released = True
            self._in_flight[row["webhook_id"]] -= 1
            if self._in_flight[row["webhook_id"]] <= 0:
                self._in_flight.pop(row["webhook_id"], None)
            self.wake()

        try:
            await self._deliver(row, release)
        finally:
            release()

    async def _deliver(self, row: Any, release: Callable[[], None]) -> None:
        started = time.perf_counter()
        status: int | None = None
        headers: dict[str, str] | None = None
        body: str | None = None
        code: str | None = None
        retry_after: float | None = None
        duration: int | None = None
        with watching(_host(row["url"])) as reach:
            try:
                if not row["enabled"]:
                    code, body = "webhook_delivery_failed", "endpoint disabled"
                else:
                    status, headers, body, retry_after = await self._post(row, reach)
                    if not 200 <= status < 300:
                        code = "webhook_delivery_failed"
            except CofferError as exc:  # webhook_url_invalid: the address check refused
                code, body = exc.code, exc.message
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                code, body = domain.no_answer(isinstance(exc, TimeoutError), reach.public)
                log.info("webhook_no_answer", delivery_id=row["id"], webhook_id=row["webhook_id"], cause=cause(exc))
                if not reach.public:
                    duration = int(self.timeout * 1000)
        release()  # the delivery stays leased until its outcome is recorded
        if duration is not None:
            # refused or closed at once would still tell itself from silent by the time it took (duration_ms, the
            # attempt's time): through the operator's allow-list, every attempt without an answer takes the timeout
            await asyncio.sleep(max(0.0, self.timeout - (time.perf_counter() - started)))
        succeeded = code is None
        gone = status == 410
        next_in = None if succeeded or gone or not row["enabled"] else domain.next_delay(
            self.schedule, row["attempt_count"] + 1, retry_after)
        if duration is None:
            duration = int((time.perf_counter() - started) * 1000)
        try:
            await self._attempts.add(Attempt(row["id"], status, code, duration, body, next_in, row["updated_at"],
                                             headers))
            if not succeeded and row["enabled"] and await self.repo.webhook_failed(
                    row["webhook_id"], self.disable_after, gone):
                log.warning("webhook_disabled", webhook_id=row["webhook_id"])
        except Exception as exc:  # noqa: BLE001 - the lease ends and the delivery is tried again
            log.warning("webhook_record_failed", delivery_id=row["id"], error=type(exc).__name__)
        log.info("webhook_attempt", delivery_id=row["id"], webhook_id=row["webhook_id"], status=status,
                 code=code, duration_ms=duration, retry_in=next_in)

    async def _post(self, row: Any, reach: Reach) -> tuple[int, dict[str, str], str | None, float | None]:
        """(status, kept headers, kept body, Retry-After) of one POST. The body is read only as far as it is
        kept: ``MAX_RESPONSE_BODY`` bytes from a receiver reached at public addresses only (every address
        its name resolved to, and the one connected to), nothing otherwise."""
        assert self._session is not None
        await check_url(row["url"], self.policy, recording(self.lookup))  # again at every delivery
        payload = orjson.dumps(row["payload"])
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": row["id"],
            "webhook-timestamp": str(timestamp),
            "webhook-signature": domain.signature_header(self.repo.secrets_in_force(row), row["id"], timestamp,
                                                         payload),
        }
        async with self._session.post(row["url"], data=payload, headers=headers, allow_redirects=False) as resp:
            public = reach.public
            raw = await read_at_most(resp.content, domain.body_budget(public))
            retry_after = domain.parse_retry_after(resp.headers.get("Retry-After")) if resp.status in (429, 503) \
                else None
            return resp.status, domain.kept_headers(resp.headers), domain.kept_body(raw, public), retry_after


def _host(url: str) -> str | None:
    try:
        return URL(url).host
    except (ValueError, TypeError):
        return None
