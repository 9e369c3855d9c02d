"""The webhook dispatcher through the gateway, with real HTTP receivers on 127.0.0.1 (api.md §8)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest
from standardwebhooks import Webhook

from services.platform import Platform
from services.webhooks.repository import Attempt, WebhooksRepository
from shared.context import RequestContext
from shared.contracts.events import Event
from tests.conftest import Api, initialised, remember_secret, start_platform
from tests.e2e.receiver import Receiver, fails
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_run_modes import spawn
from tests.e2e.test_secrets import put, unique
from tests.integration.test_bus_contract import wait_until


async def webhook(api: Api, url: str, events: list[str] | None = None, path_pattern: str | None = None,
                  **extra: Any) -> dict[str, Any]:
    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": url, **extra})
    assert status == 201, hook
    remember_secret(hook["secret"])
    if events is not None:
        status, sub, _ = await api.request("POST", "/v1/subscriptions", json={
            "webhook_id": hook["id"], "event_types": events, "path_pattern": path_pattern})
        assert status == 201, sub
        hook["subscription"] = sub
    return dict(hook)


async def attempts_of(api: Api, hook: dict[str, Any], count: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The deliveries of a webhook once ``count`` attempts in all are recorded."""
    deadline = time.monotonic() + timeout
    while True:
        _, page, _ = await api.request("GET", f"/v1/webhooks/{hook['id']}/deliveries")
        full = [(await api.request("GET", f"/v1/webhooks/{hook['id']}/deliveries/{d['id']}"))[1]
                for d in page["items"]]
        if sum(len(d["attempts"]) for d in full) >= count:
            return full
        assert time.monotonic() < deadline, f"only {full}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def receiver() -> Any:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_a_secret_write_gives_one_signed_delivery_per_matching_subscription(api: Api, receiver: Receiver) -> None:
    base = unique()
    matching = await webhook(api, receiver.url, ["secret.*"], f"{base}/**")
    everything = await webhook(api, receiver.url, ["#"], f"{base}/**")
    await webhook(api, receiver.url, ["lease.*"])  # wrong type
    await webhook(api, receiver.url, ["secret.*"], "elsewhere/**")  # wrong path
    value = remember_secret("hooked-" + base)
    await put(api, f"{base}/db", value)
    await wait_until(lambda: len(receiver.requests) >= 2, timeout=10)
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 2
    for received in receiver.requests:
        secret = matching["secret"] if received.headers["webhook-id"] in str(await _ids(api, matching)) \
            else everything["secret"]
        event = Webhook(secret).verify(received.body, received.headers)  # the reference library, unchanged
        assert event["type"] == "secret.created" and event["data"] == {"path": f"{base}/db", "version": 1,
                                                                        "secret_type": "generic"}
        assert value not in received.body.decode()
        assert received.headers["content-type"] == "application/json"
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 2


async def _ids(api: Api, hook: dict[str, Any]) -> list[str]:
    _, page, _ = await api.request("GET", f"/v1/webhooks/{hook['id']}/deliveries")
    return [d["id"] for d in page["items"]]


async def test_failing_twice_then_succeeding_is_three_attempts_one_webhook_id(api: Api) -> None:
    receiver = await Receiver(behave=fails(2)).start()
    try:
        hook = await webhook(api, receiver.url)
        await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
        (delivery,) = await attempts_of(api, hook, 3)
        assert delivery["status"] == "succeeded" and delivery["event_type"] == "webhook.ping"
        assert [a["response_status"] for a in delivery["attempts"]] == [500, 500, 200]
        assert [a["error_code"] for a in delivery["attempts"]] == ["webhook_delivery_failed"] * 2 + [None]
        assert {r.headers["webhook-id"] for r in receiver.requests} == {delivery["id"]}
        assert len(receiver.requests) == 3
    finally:
        await receiver.stop()


async def test_a_receiver_slower_than_the_timeout_is_an_attempt_without_answer(api: Api) -> None:
    """Through the operator's private allow-list (127.0.0.0/8 here) a receiver that does not answer in time
    reads like one that refused the connection ("could not connect", issue #27): a silent port must not tell
    itself from a closed one. Only a public receiver's attempt says ``webhook_delivery_timeout``
    (tests/unit/test_upstream_answers.py)."""
    receiver = await Receiver(behave=lambda n, r: (200, {}, 3.0 if n == 0 else 0.0)).start()
    try:
        hook = await webhook(api, receiver.url)
        await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
        (delivery,) = await attempts_of(api, hook, 2)
        first = delivery["attempts"][0]
        assert first["error_code"] == "webhook_delivery_failed" and first["response_status"] is None
        assert first["response_body"] == "could not connect" and first["duration_ms"] == 1000
        assert delivery["attempts"][1]["response_status"] == 200
    finally:
        await receiver.stop()


async def test_410_disables_the_endpoint_and_publishes_webhook_disabled(api: Api, platform: Platform) -> None:
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await platform.bus.subscribe("test-disabled-" + unique(), ["webhook.disabled"], on)
    receiver = await Receiver(behave=lambda n, r: (410, {}, 0.0)).start()
    try:
        hook = await webhook(api, receiver.url)
        await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
        await wait_until(lambda: any(e.data.get("webhook_id") == hook["id"] for e in got), timeout=10)
        _, state, _ = await api.request("GET", f"/v1/webhooks/{hook['id']}")
        assert state["enabled"] is False and "410" in state["disabled_reason"]
        assert len(receiver.requests) == 1  # no retries after Gone
        _, state, _ = await api.request("PATCH", f"/v1/webhooks/{hook['id']}", json={"enabled": True})
        assert state["enabled"] is True and state["disabled_reason"] is None
    finally:
        await receiver.stop()


async def test_retry_after_is_honoured_and_redirects_are_not_followed(api: Api) -> None:
    target = await Receiver().start()
    throttled = await Receiver(behave=fails(1, 429, {"Retry-After": "1"})).start()
    redirecting = await Receiver(behave=lambda n, r: (302, {"Location": target.url}, 0.0)).start()
    try:
        slow_hook = await webhook(api, throttled.url)
        await api.request("POST", f"/v1/webhooks/{slow_hook['id']}:ping")
        await attempts_of(api, slow_hook, 2)
        assert throttled.requests[1].at - throttled.requests[0].at >= 0.95  # not the 0.3 s of the schedule
        redirect_hook = await webhook(api, redirecting.url)
        await api.request("POST", f"/v1/webhooks/{redirect_hook['id']}:ping")
        (delivery,) = await attempts_of(api, redirect_hook, 1)
        assert delivery["attempts"][0]["response_status"] == 302
        assert delivery["attempts"][0]["error_code"] == "webhook_delivery_failed"
        await asyncio.sleep(0.3)
        assert target.requests == []
    finally:
        for r in (target, throttled, redirecting):
            await r.stop()


async def test_rotated_secret_overlaps_with_the_old_one(api: Api, receiver: Receiver) -> None:
    hook = await webhook(api, receiver.url)
    status, rotated, _ = await api.request("POST", f"/v1/webhooks/{hook['id']}:rotate-secret")
    assert status == 200 and rotated["secret"] != hook["secret"]
    remember_secret(rotated["secret"])
    await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
    await wait_until(lambda: len(receiver.requests) == 1)
    received = receiver.requests[0]
    assert len(received.headers["webhook-signature"].split(" ")) == 2
    for secret in (hook["secret"], rotated["secret"]):
        assert Webhook(secret).verify(received.body, received.headers)["type"] == "webhook.ping"


async def test_an_event_delivered_twice_makes_one_delivery_per_subscription(
    api: Api, platform: Platform, receiver: Receiver
) -> None:
    base = unique()
    hook = await webhook(api, receiver.url, ["secret.updated"], f"{base}/**")
    tenant = (await api.request("GET", "/v1/auth/whoami"))[1]["tenant"]["id"]
    event = Event(type="secret.updated", tenant_id=tenant, data={"path": f"{base}/x", "version": 2,
                                                                  "secret_type": "generic"})
    await platform.bus.publish(event)
    await platform.bus.publish(event)  # as RabbitMQ may redeliver
    await wait_until(lambda: len(receiver.requests) >= 1)
    await asyncio.sleep(0.6)
    assert len(receiver.requests) == 1
    assert len(await _ids(api, hook)) == 1


async def test_events_arriving_together_share_transactions_and_each_gets_one_delivery(
    api: Api, platform: Platform, receiver: Receiver
) -> None:
    """40 events, each published twice at once: the dispatcher writes them in groups (one transaction for
    those it handles together, duplicates among them) and each still makes exactly one delivery."""
    base = unique()
    await webhook(api, receiver.url, ["secret.updated"], f"{base}/**")
    tenant = (await api.request("GET", "/v1/auth/whoami"))[1]["tenant"]["id"]
    events = [Event(type="secret.updated", tenant_id=tenant, data={"path": f"{base}/k{i}", "version": 2,
                                                                    "secret_type": "generic"}) for i in range(40)]
    await asyncio.gather(*(platform.bus.publish(e) for e in events + events))
    await wait_until(lambda: len(receiver.requests) >= 40, timeout=15)
    await asyncio.sleep(0.6)
    assert len(receiver.requests) == 40
    assert sorted(orjson.loads(r.body)["data"]["path"] for r in receiver.requests) == sorted(
        e.data["path"] for e in events)


async def test_a_slow_endpoint_does_not_starve_a_fast_one(api: Api) -> None:
    slow = await Receiver(behave=lambda n, r: (200, {}, 0.8)).start()
    fast = await Receiver().start()
    try:
        slow_hook = await webhook(api, slow.url)
        fast_hook = await webhook(api, fast.url)
        for _ in range(20):
            await api.request("POST", f"/v1/webhooks/{slow_hook['id']}:ping")
        started = time.monotonic()
        await api.request("POST", f"/v1/webhooks/{fast_hook['id']}:ping")
        await wait_until(lambda: len(fast.requests) == 1, timeout=10)
        assert time.monotonic() - started < 1.0
        assert max(_concurrent(slow)) <= 4  # the per-endpoint cap
    finally:
        await slow.stop()
        await fast.stop()


def _concurrent(receiver: Receiver) -> list[int]:
    starts = sorted(r.at for r in receiver.requests)
    return [sum(1 for s in starts if t <= s < t + 0.7) for t in starts] or [0]


async def test_webhook_api_codes(api: Api, receiver: Receiver) -> None:
    cases = [
        ("GET", "/v1/webhooks/whk_nope", None, "webhook_not_found"),
        ("PATCH", "/v1/webhooks/whk_nope", {"description": "x"}, "webhook_not_found"),
        ("DELETE", "/v1/webhooks/whk_nope", None, "webhook_not_found"),
        ("POST", "/v1/webhooks/whk_nope:ping", None, "webhook_not_found"),
        ("POST", "/v1/webhooks/whk_nope:rotate-secret", None, "webhook_not_found"),
        ("GET", "/v1/webhooks/whk_nope/deliveries", None, "webhook_not_found"),
        ("GET", "/v1/subscriptions/sub_nope", None, "subscription_not_found"),
        ("DELETE", "/v1/subscriptions/sub_nope", None, "subscription_not_found"),
        ("POST", "/v1/subscriptions", {"webhook_id": "whk_nope", "event_types": ["#"]}, "webhook_not_found"),
        ("POST", "/v1/webhooks", {"url": 5}, "validation_error"),
        ("POST", "/v1/webhooks", {}, "validation_error"),
        ("POST", "/v1/webhooks", {"url": "ftp://127.0.0.1/x"}, "webhook_url_invalid"),
        ("POST", "/v1/webhooks/x:explode", None, "invalid_request"),
    ]
    for method, path, body, code in cases:
        status, answer, headers = await api.request(method, path, json=body)
        assert_envelope(status, answer, headers, code)
    hook = await webhook(api, receiver.url)
    for bad in ({"webhook_id": hook["id"], "event_types": []},
                {"webhook_id": hook["id"], "event_types": ["Secret Created"]},
                {"webhook_id": hook["id"], "event_types": "secret.*"}):
        status, answer, headers = await api.request("POST", "/v1/subscriptions", json=bad)
        assert_envelope(status, answer, headers, "validation_error")
    status, answer, headers = await api.request("POST", "/v1/subscriptions", json={
        "webhook_id": hook["id"], "event_types": ["#"], "path_pattern": "a/[b"})
    assert_envelope(status, answer, headers, "invalid_glob")
    status, got, _ = await api.request("GET", f"/v1/webhooks/{hook['id']}")
    assert status == 200 and "secret" not in got
    status, sub, _ = await api.request("POST", "/v1/subscriptions", json={"webhook_id": hook["id"],
                                                                          "event_types": ["secret.*"]})
    assert (await api.request("GET", f"/v1/subscriptions/{sub['id']}"))[0] == 200
    assert sub["id"] in [s["id"] for s in (await api.request("GET", "/v1/subscriptions?limit=1000"))[1]["items"]]
    assert (await api.request("DELETE", f"/v1/subscriptions/{sub['id']}"))[0] == 204
    status, ping, _ = await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
    assert status == 202
    await wait_until(lambda: len(receiver.requests) == 1)
    status, retried, _ = await api.request("POST", f"/v1/webhooks/{hook['id']}/deliveries/{ping['delivery_id']}:retry")
    assert status == 202
    await wait_until(lambda: len(receiver.requests) == 2)
    assert (await api.request("DELETE", f"/v1/webhooks/{hook['id']}"))[0] == 204


SSRF_URLS = [
    "http://127.0.0.1/", "https://127.0.0.1/", "https://[::ffff:127.0.0.1]/", "https://169.254.169.254/latest",
    "https://10.1.2.3/", "https://172.16.0.1/", "https://192.168.1.1/", "https://100.64.0.1/", "https://0.0.0.0/",
    "https://224.0.0.1/", "https://240.0.0.1/", "https://192.0.2.10/", "https://198.51.100.1/",
    "https://[::1]/", "https://[fc00::1]/", "https://[fd12:3456::1]/", "https://[fe80::1]/",
    "https://[::ffff:10.0.0.1]/", "https://[::127.0.0.1]/", "https://[2002:7f00:1::]/",
    "https://2130706433/", "https://0x7f000001/", "https://0177.0.0.1/", "https://0x7f.0.0.1/", "https://127.1/",
    "https://localhost/", "https://good.com@127.0.0.1/", "https://user:pass@example.com/",
    "ftp://example.com/", "javascript:alert(1)", "https:///nohost", "not a url", "https://exa mple.com/",
    "https://169.254.169.254.nip.io.invalid/",
]


async def test_ssrf_table_is_refused_when_not_allow_listed(tmp_path: Path, pg_dsn: str,
                                                            http: aiohttp.ClientSession) -> None:
    platform = await start_platform(tmp_path, None, pg_dsn, outbound_allowed_cidrs=(), outbound_allow_http=False)
    try:
        api = await initialised(platform, http)
        assert len(SSRF_URLS) >= 25
        for url in SSRF_URLS:
            status, body, headers = await api.request("POST", "/v1/webhooks", json={"url": url})
            assert_envelope(status, body, headers, "webhook_url_invalid"), url
            assert "pass" not in str(body)  # credentials in a URL are never echoed
        _, page, _ = await api.request("GET", "/v1/webhooks")
        assert page["items"] == []  # nothing stored
    finally:
        await platform.close()


async def test_killing_the_dispatcher_mid_retry_still_delivers_exactly_once(
    tmp_path: Path, private_amqp: str, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    receiver = await Receiver(behave=fails(1)).start()
    platform = await start_platform(tmp_path, private_amqp, pg_dsn,
                                    services=("gateway", "secrets", "pki", "lease"))
    # the older COFFER_WEBHOOK_* names on purpose: they must keep working as aliases
    env = {"COFFER_AMQP_URL": private_amqp, "COFFER_DATABASE_URL": pg_dsn, "COFFER_DATA_DIR": str(tmp_path),
           "COFFER_SCHEMA_PREFIX": platform.settings.schema_prefix, "COFFER_WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
           "COFFER_WEBHOOK_ALLOW_HTTP": "true", "COFFER_WEBHOOK_RETRY_SCHEDULE": "0,3", "COFFER_WEBHOOK_TIMEOUT": "2",
           "COFFER_WEBHOOK_POLL_INTERVAL": "0.1"}
    dispatcher = await spawn("services.webhooks", env)
    try:
        assert platform.url
        api = Api(platform.url, http)
        deadline = time.monotonic() + 30
        while (health := await api.request("GET", "/v1/sys/health", token=None))[0] != 200:
            assert time.monotonic() < deadline, (health[1], dispatcher.output)
            await asyncio.sleep(0.2)
        _, init, _ = await api.request("POST", "/v1/sys/init", token=None)
        api.token = init["token"]
        hook = await webhook(api, receiver.url, ["secret.*"])
        await put(api, "killed/mid-retry")
        await wait_until(lambda: len(receiver.requests) == 1, timeout=10)  # the first attempt failed ...
        await attempts_of(api, hook, 1)  # ... and is recorded: the delivery now waits for its retry
        dispatcher.proc.send_signal(signal.SIGKILL)
        await dispatcher.stop()
        dispatcher = await spawn("services.webhooks", env)
        await wait_until(lambda: len(receiver.requests) == 2, timeout=20)
        await asyncio.sleep(1.0)
        (delivery,) = await attempts_of(api, hook, 2)
        assert delivery["status"] == "succeeded"
        per_id = receiver.by_webhook_id()
        assert list(per_id) == [delivery["id"]] and len(per_id[delivery["id"]]) == 2  # one failure, one success
        assert json.loads(receiver.requests[1].body)["type"] == "secret.created"
    finally:
        await dispatcher.stop()
        await platform.close()
        await receiver.stop()


async def test_an_endpoint_failing_longer_than_disable_after_is_disabled(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    receiver = await Receiver(behave=lambda n, r: (500, {}, 0.0)).start()
    platform = await start_platform(tmp_path, None, pg_dsn, webhook_disable_after="1s",
                                    webhook_retry_schedule="0,0.5,0.5,0.5,0.5,0.5")
    try:
        api = await initialised(platform, http)
        hook = await webhook(api, receiver.url)
        await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
        deadline = time.monotonic() + 10
        while (state := (await api.request("GET", f"/v1/webhooks/{hook['id']}"))[1])["enabled"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert "failing for more than 1 s" in state["disabled_reason"]
        attempts = len(receiver.requests)
        await asyncio.sleep(1.0)
        assert len(receiver.requests) == attempts  # no more deliveries to a disabled endpoint
    finally:
        await platform.close()
        await receiver.stop()


async def test_a_success_after_failures_clears_failing_since(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """Two 500s mark the endpoint failing; the retry that succeeds clears it (recorded with the attempt)."""
    receiver = await Receiver(behave=lambda n, r: (500, {}, 0.0) if n < 2 else (200, {}, 0.0)).start()
    platform = await start_platform(tmp_path, None, pg_dsn, webhook_retry_schedule="0,0.2,0.2,0.2")
    try:
        api = await initialised(platform, http)
        hook = await webhook(api, receiver.url)
        await api.request("POST", f"/v1/webhooks/{hook['id']}:ping")
        deadline = time.monotonic() + 10
        while len(receiver.requests) < 2:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        pool = platform.runtimes["webhooks"].pool
        assert pool is not None
        table = f'"{platform.settings.schema_for("webhooks")}".webhooks'

        async def failing_since() -> Any:
            return await pool.fetchval(f"SELECT failing_since FROM {table} WHERE id = $1", hook["id"])

        failing = None
        while len(receiver.requests) < 3:
            failing = failing or await failing_since()
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert failing is not None  # seen between the failures and the success (not part of the API's view)
        while await failing_since() is not None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        state = (await api.request("GET", f"/v1/webhooks/{hook['id']}"))[1]
        assert state["enabled"] is True
        status, page, _ = await api.request("GET", f"/v1/webhooks/{hook['id']}/deliveries")
        assert status == 200 and page["items"][0]["status"] == "succeeded" and page["items"][0]["attempt_count"] == 3
    finally:
        await platform.close()
        await receiver.stop()


async def test_max_webhooks_quota(api: Api, receiver: Receiver) -> None:
    from tests.e2e.iam_helpers import identity
    from tests.e2e.test_tenants import EVERYTHING, tenant

    child = await tenant(api)
    admin = await identity(api, ["webhooks"], EVERYTHING + [{"effect": "allow", "paths": ["**"],
                                                             "capabilities": ["rotate", "list"]}],
                           tenant=child["id"])
    await api.request("PATCH", f"/v1/tenants/{child['id']}", json={"quotas": {"max_webhooks": 1}})
    status, created, _ = await api.request("POST", "/v1/webhooks", token=admin["token"], json={"url": receiver.url})
    assert status == 201
    remember_secret(created["secret"])
    status, body, headers = await api.request("POST", "/v1/webhooks", token=admin["token"],
                                              json={"url": receiver.url})
    assert_envelope(status, body, headers, "quota_exceeded")


async def test_webhook_lists_show_only_what_the_caller_may_list(api: Api, receiver: Receiver) -> None:
    from tests.e2e.iam_helpers import allow, identity

    first, second = await webhook(api, receiver.url), await webhook(api, receiver.url)
    viewer = await identity(api, ["webhooks"], [allow([f"webhooks/{first['id']}"], ["list", "read"])])
    status, page, _ = await api.request("GET", "/v1/webhooks?limit=1000", token=viewer["token"])
    ids = [w["id"] for w in page["items"]]
    assert status == 200 and first["id"] in ids and second["id"] not in ids
    status, page, _ = await api.request("GET", "/v1/subscriptions", token=viewer["token"])
    assert status == 200 and page["items"] == []
    status, body, headers = await api.request("GET", f"/v1/webhooks/{second['id']}", token=viewer["token"])
    assert_envelope(status, body, headers, "access_denied")


async def leased_deliveries(platform: Platform, hooks: dict[str, dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """A delivery per named webhook, as if the dispatcher had claimed it (leased an hour ahead, so the
    running dispatcher leaves it alone): name -> (delivery id, its ``updated_at`` at the claim)."""
    runtime = platform.runtimes["webhooks"]
    assert runtime.pool is not None
    schema = platform.settings.schema_for("webhooks")
    out = {}
    for name, hook in hooks.items():
        row = await runtime.pool.fetchrow(
            f'INSERT INTO "{schema}".deliveries (id, tenant_id, webhook_id, event_id, event_type, payload,'
            " lease_until) SELECT $1, tenant_id, id, gen_random_uuid(), 'webhook.ping', '{}',"
            f" now() + interval '1h' FROM \"{schema}\".webhooks WHERE id = $2 RETURNING id, updated_at",
            f"msg_test_{name}_{unique()}", hook["id"])
        out[name] = (row["id"], row["updated_at"])
    return out


async def test_the_outcomes_of_a_group_are_written_together_each_to_its_own_delivery(
    api: Api, platform: Platform, receiver: Receiver
) -> None:
    """The dispatcher records the outcomes finished meanwhile in one statement (``record_attempts``):
    each delivery gets its own attempt and state, and only an endpoint that succeeded stops failing."""
    runtime = platform.runtimes["webhooks"]
    assert runtime.pool is not None
    schema = platform.settings.schema_for("webhooks")
    repo = WebhooksRepository(runtime.pool, runtime.keyring, schema)
    ok_hook, bad_hook = await webhook(api, receiver.url), await webhook(api, receiver.url)
    await runtime.pool.execute(f'UPDATE "{schema}".webhooks SET failing_since = now() WHERE id = ANY($1::text[])',
                               [ok_hook["id"], bad_hook["id"]])
    claimed = await leased_deliveries(platform, {"ok": ok_hook, "retry": bad_hook, "final": bad_hook})
    ids = {name: delivery_id for name, (delivery_id, _) in claimed.items()}
    await repo.record_attempts([
        Attempt(ids["ok"], 200, None, 12, "fine", None, claimed["ok"][1]),
        Attempt(ids["retry"], 503, "webhook_delivery_failed", 30, "busy", 30.0, claimed["retry"][1]),
        Attempt(ids["final"], None, "webhook_delivery_timeout", 10_000, None, None, claimed["final"][1]),
    ])
    rows = {r["id"]: r for r in await runtime.pool.fetch(
        f'SELECT id, status, attempt_count, lease_until, next_attempt_at - now() AS wait FROM "{schema}".deliveries'
        " WHERE id = ANY($1::text[])", list(ids.values()))}
    assert {name: rows[i]["status"] for name, i in ids.items()} == {"ok": "succeeded", "retry": "pending",
                                                                     "final": "failed"}
    assert all(r["attempt_count"] == 1 and r["lease_until"] is None for r in rows.values())
    assert 25 < rows[ids["retry"]]["wait"].total_seconds() <= 30
    attempts = {r["delivery_id"]: r for r in await runtime.pool.fetch(
        f'SELECT delivery_id, response_status, error_code, duration_ms, response_body FROM "{schema}".attempts'
        " WHERE delivery_id = ANY($1::text[])", list(ids.values()))}
    assert [tuple(attempts[ids[n]].values())[1:] for n in ("ok", "retry", "final")] == [
        (200, None, 12, "fine"), (503, "webhook_delivery_failed", 30, "busy"),
        (None, "webhook_delivery_timeout", 10_000, None)]
    failing = dict(await runtime.pool.fetch(f'SELECT id, failing_since FROM "{schema}".webhooks'
                                            " WHERE id = ANY($1::text[])", [ok_hook["id"], bad_hook["id"]]))
    assert failing[ok_hook["id"]] is None and failing[bad_hook["id"]] is not None
    # a delivery gone meanwhile (its webhook deleted) breaks its group's statement and nothing of it is
    # written; the dispatcher then writes that group again one by one (tests/unit/test_write_groups.py)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await repo.record_attempts([Attempt(ids["retry"], 200, None, 5, "", None, claimed["retry"][1]),
                                    Attempt("msg_gone", 200, None, 5, "", None, claimed["retry"][1])])
    assert await runtime.pool.fetchval(f'SELECT status FROM "{schema}".deliveries WHERE id = $1',
                                       ids["retry"]) == "pending"


async def test_a_retry_asked_while_an_attempt_is_in_flight_is_kept_and_runs_after_it(
    api: Api, platform: Platform, receiver: Receiver
) -> None:
    """``:retry`` during an attempt leaves the lease alone (no second attempt at once), and the attempt's
    outcome, recorded after, doesn't undo the retry: the delivery stays pending and is delivered again."""
    runtime = platform.runtimes["webhooks"]
    assert runtime.pool is not None
    schema = platform.settings.schema_for("webhooks")
    hook = await webhook(api, receiver.url)
    (delivery_id, claimed_state), = (await leased_deliveries(platform, {"in_flight": hook})).values()
    status, _, _ = await api.request("POST", f"/v1/webhooks/{hook['id']}/deliveries/{delivery_id}:retry")
    assert status == 202
    row = await runtime.pool.fetchrow(f'SELECT status, lease_until FROM "{schema}".deliveries WHERE id = $1',
                                      delivery_id)
    assert row["status"] == "pending" and row["lease_until"] is not None  # still the in-flight attempt's
    await asyncio.sleep(0.5)
    assert receiver.requests == []  # nobody took it meanwhile
    # the in-flight attempt now ends (a success), as the dispatcher would record it
    await WebhooksRepository(runtime.pool, runtime.keyring, schema).record_attempts(
        [Attempt(delivery_id, 200, None, 7, "first", None, claimed_state)])
    await wait_until(lambda: len(receiver.requests) == 1)
    assert receiver.requests[0].headers["webhook-id"] == delivery_id
    _, detail, _ = await api.request("GET", f"/v1/webhooks/{hook['id']}/deliveries/{delivery_id}")
    deadline = time.monotonic() + 10
    while len(detail["attempts"]) < 2 or detail["status"] != "succeeded":
        assert time.monotonic() < deadline, detail
        await asyncio.sleep(0.1)
        _, detail, _ = await api.request("GET", f"/v1/webhooks/{hook['id']}/deliveries/{delivery_id}")
    assert detail["attempt_count"] == 2


async def test_another_tenant_or_a_narrow_identity_cannot_see_or_retry_a_delivery(
    api: Api, platform: Platform, receiver: Receiver
) -> None:
    """A delivery's detail and ``:retry``: another tenant's admin gets the same answer as for an id that
    doesn't exist (no oracle), an identity allowed only another webhook is denied, and the delivery is left
    as it was."""
    from tests.e2e.iam_helpers import allow, identity

    runtime = platform.runtimes["webhooks"]
    assert runtime.pool is not None
    schema = platform.settings.schema_for("webhooks")
    hook, elsewhere = await webhook(api, receiver.url), await webhook(api, receiver.url)
    (delivery_id, _), = (await leased_deliveries(platform, {"done": hook})).values()
    before = await runtime.pool.fetchrow(
        f'UPDATE "{schema}".deliveries SET status = \'failed\', lease_until = NULL WHERE id = $1'
        " RETURNING status, updated_at, next_attempt_at", delivery_id)
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": f"t-{unique()}"})
    assert status == 201, child
    stranger = await identity(api, ["webhooks"], [allow(["webhooks", "webhooks/**"], ["list", "read", "write"])],
                              tenant=child["id"])
    narrow = await identity(api, ["webhooks"], [allow([f"webhooks/{elsewhere['id']}", f"webhooks/{elsewhere['id']}/**"],
                                                       ["list", "read", "write"])])
    real = f"/v1/webhooks/{hook['id']}/deliveries/{delivery_id}"
    for method, suffix in (("GET", ""), ("POST", ":retry")):
        theirs = await api.request(method, real + suffix, token=stranger["token"])
        nowhere = await api.request(method, f"/v1/webhooks/whk_{unique()}/deliveries/msg_{unique()}{suffix}",
                                    token=stranger["token"])
        assert_envelope(*theirs, "webhook_not_found")
        assert_envelope(*nowhere, "webhook_not_found")
        assert {k: v for k, v in theirs[1]["error"].items() if k not in ("request_id", "details")} == \
            {k: v for k, v in nowhere[1]["error"].items() if k not in ("request_id", "details")}
        assert_envelope(*await api.request(method, real + suffix, token=narrow["token"]), "access_denied")
    after = await runtime.pool.fetchrow(
        f'SELECT status, updated_at, next_attempt_at FROM "{schema}".deliveries WHERE id = $1', delivery_id)
    assert dict(after) == dict(before)
    await asyncio.sleep(0.3)
    assert receiver.requests == []
