"""Operations at the gateway: rate limits, quotas, maintenance, feature flags, audit, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from openapi_spec_validator import validate

from services.gateway.state import STATE
from services.platform import Platform
from shared.context import RequestContext
from shared.errors import REGISTRY
from tests import fuzz
from tests.conftest import ROOT, Api, free_port, initialised, remember_secret, start_platform
from tests.e2e.iam_helpers import identity
from tests.e2e.pki_helpers import issue, make_ca, make_role
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_run_modes import spawn, wait_healthy
from tests.e2e.test_secrets import put, unique
from tests.e2e.test_tenants import EVERYTHING, SECRETS, tenant

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


async def own_platform(tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession, amqp: str | None = None,
                       **settings: Any) -> tuple[Platform, Api]:
    platform = await start_platform(tmp_path, amqp, pg_dsn, **settings)
    api = await initialised(platform, http)
    return platform, api


# -- rate limits ---------------------------------------------------------------------

async def test_rate_limit_headers_on_2xx_4xx_and_5xx(api: Api, tmp_path: Path, pg_dsn: str,
                                                       http: aiohttp.ClientSession) -> None:
    for method, path, token in (("GET", "/v1/sys/health", None), ("GET", "/v1/auth/whoami", "default"),
                                ("GET", "/v1/nope", "default"), ("GET", "/v1/auth/whoami", None),
                                ("GET", "/v1/secrets/a%00", "default")):
        status, _, headers = await api.request(method, path, token=token)
        assert all(h in headers for h in RATE_HEADERS), (method, path, status)
        assert int(headers["X-RateLimit-Remaining"]) <= int(headers["X-RateLimit-Limit"])
    degraded = await start_platform(tmp_path, None, pg_dsn, services=("gateway",))
    try:
        assert degraded.url
        status, _, headers = await Api(degraded.url, http).request("GET", "/v1/sys/health")
        assert status == 503 and all(h in headers for h in RATE_HEADERS)
    finally:
        await degraded.close()


async def test_429_with_retry_after_then_recovery(tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession) -> None:
    platform, api = await own_platform(tmp_path, pg_dsn, http, rate_limits="read=3/s,auth=2/m")
    try:
        statuses = [(await api.request("GET", "/v1/auth/whoami"))[0] for _ in range(3)]
        assert statuses == [200, 200, 200]
        status, body, headers = await api.request("GET", "/v1/auth/whoami")
        err = assert_envelope(status, body, headers, "rate_limited")
        assert int(headers["Retry-After"]) >= 1 and headers["X-RateLimit-Remaining"] == "0"
        assert err["details"]["category"] == "read"
        await asyncio.sleep(int(headers["Retry-After"]))
        assert (await api.request("GET", "/v1/auth/whoami"))[0] == 200
        # before authentication the client address pays: the auth category is 2 a minute here
        for _ in range(1):  # init already spent one
            await api.request("POST", "/v1/auth/token", token=None, json={"client_id": "x", "client_secret": "y"})
        status, body, headers = await api.request("POST", "/v1/auth/token", token=None,
                                                  json={"client_id": "x", "client_secret": "y"})
        assert_envelope(status, body, headers, "rate_limited")
        status, body, headers = await api.request("GET", "/v1/auth/whoami", token="forged.token.here")
        assert_envelope(status, body, headers, "rate_limited")  # token guessing is throttled by address
    finally:
        await platform.close()


# -- quotas --------------------------------------------------------------------------

async def test_requests_per_minute_quota(api: Api) -> None:
    child = await tenant(api)
    admin = await identity(api, SECRETS, EVERYTHING, tenant=child["id"])
    await api.request("PATCH", f"/v1/tenants/{child['id']}", json={"quotas": {"requests_per_minute": 3}})
    seen = [(await api.request("GET", "/v1/auth/whoami", token=admin["token"]))[0] for _ in range(3)]
    assert seen == [200, 200, 200] or seen[-1] == 429  # the minute may have turned mid-test
    status, body, headers = await api.request("GET", "/v1/auth/whoami", token=admin["token"])
    if seen == [200, 200, 200]:
        err = assert_envelope(status, body, headers, "quota_exceeded")
        assert err["details"]["quota"] == "requests_per_minute" and 1 <= int(headers["Retry-After"]) <= 60
    assert (await api.request("GET", "/v1/auth/whoami"))[0] == 200  # other tenants are not affected


async def test_max_secrets_quota_holds_under_racing_creates(api: Api) -> None:
    child = await tenant(api)
    admin = await identity(api, SECRETS, EVERYTHING, tenant=child["id"])
    await api.request("PATCH", f"/v1/tenants/{child['id']}", json={"quotas": {"max_secrets": 5}})
    t = admin["token"]
    for i in range(3):
        assert (await api.request("PUT", f"/v1/secrets/q/{i}", token=t,
                                  json={"value": remember_secret(f"quota-{child['id']}-{i}")}))[0] == 201
    results = await asyncio.gather(*(api.request("PUT", f"/v1/secrets/q/race{i}", token=t,
                                                  json={"value": remember_secret(f"race-{child['id']}-{i}")})
                                     for i in range(6)))
    statuses = sorted(r[0] for r in results)
    assert statuses == [201, 201, 429, 429, 429, 429]
    assert all(r[1]["error"]["code"] == "quota_exceeded" for r in results if r[0] == 429)
    assert (await api.request("PUT", "/v1/secrets/q/0", token=t,
                              json={"value": remember_secret(f"update-{child['id']}")}))[0] == 200


# -- maintenance and feature flags ------------------------------------------------------

async def test_maintenance_mode_across_two_gateway_processes_and_restarts(
    tmp_path: Path, private_amqp: str, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    platform, api = await own_platform(tmp_path, pg_dsn, http, amqp=private_amqp)
    port = free_port()
    env = {"COFFER_AMQP_URL": private_amqp, "COFFER_DATABASE_URL": pg_dsn, "COFFER_HTTP_PORT": str(port),
           "COFFER_SCHEMA_PREFIX": platform.settings.schema_prefix, "COFFER_DATA_DIR": str(tmp_path)}
    other = await spawn("services.gateway", env)
    far = Api(f"http://127.0.0.1:{port}", http)
    far.token = api.token
    try:
        await wait_healthy(far, other)
        status, state, _ = await api.request("PUT", "/v1/sys/maintenance",
                                             json={"enabled": True, "message": "upgrading to 2.0"})
        assert status == 200 and state == {"enabled": True, "message": "upgrading to 2.0"}
        status, body, headers = await api.request("GET", "/v1/auth/whoami")
        err = assert_envelope(status, body, headers, "maintenance_mode")
        assert err["message"] == "upgrading to 2.0"
        switched = time.monotonic()
        while (await far.request("GET", "/v1/auth/whoami"))[0] != 503:
            assert time.monotonic() - switched < 1.0, "maintenance not seen by the other replica in 1 s"
            await asyncio.sleep(0.02)
        assert (await far.request("GET", "/v1/sys/health"))[0] == 200  # sys/* stays open
        assert (await far.request("GET", "/v1/sys/maintenance"))[1]["enabled"] is True
        await other.stop()
        other = await spawn("services.gateway", env)  # a restart reads it back
        await wait_healthy(far, other)
        status, body, headers = await far.request("GET", "/v1/auth/whoami")
        assert_envelope(status, body, headers, "maintenance_mode")
        assert (await far.request("PUT", "/v1/sys/maintenance", json={"enabled": False}))[0] == 200
        switched = time.monotonic()
        while (await api.request("GET", "/v1/auth/whoami"))[0] != 200:
            assert time.monotonic() - switched < 1.0
            await asyncio.sleep(0.02)
    finally:
        await other.stop()
        await platform.close()


async def test_only_root_admins_switch_maintenance(api: Api) -> None:
    child = await tenant(api)
    admin = await identity(api, SECRETS, EVERYTHING, tenant=child["id"])
    status, body, headers = await api.request("PUT", "/v1/sys/maintenance", token=admin["token"],
                                              json={"enabled": True})
    assert_envelope(status, body, headers, "forbidden")
    status, body, headers = await api.request("PUT", "/v1/sys/maintenance", json={"enabled": "yes"})
    assert_envelope(status, body, headers, "validation_error")


async def test_disabled_features_answer_feature_disabled(tmp_path: Path, pg_dsn: str,
                                                          http: aiohttp.ClientSession) -> None:
    platform, api = await own_platform(tmp_path, pg_dsn, http, disabled_features=frozenset({"pki", "webhooks",
                                                                                            "exports", "acme"}))
    try:
        for path in ("/v1/pki/cas", "/v1/pki/roles/web:issue", "/v1/webhooks", "/v1/subscriptions/x",
                     "/v1/exports/exp_0", "/v1/exports/exp_0/bundle", "/v1/pki/acme/orders"):
            status, body, headers = await api.request("GET", path)
            err = assert_envelope(status, body, headers, "feature_disabled")
            assert err["details"]["feature"] in ("pki", "webhooks", "exports", "acme")
        status, body, headers = await api.request("POST", "/v1/exports", json={
            "prefix": "", "format": "json", "recipient": "age1x"})
        assert_envelope(status, body, headers, "feature_disabled")
        assert (await api.request("GET", "/v1/engines"))[0] == 200  # not disabled
        await put(api, "still/works")
    finally:
        await platform.close()


# -- audit -------------------------------------------------------------------------------

async def test_audit_entries_filters_match_and_tamper_detection(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    platform, api = await own_platform(tmp_path, pg_dsn, http)
    try:
        value = remember_secret("audited-" + unique())
        await put(api, "aud/one", value)
        await api.request("GET", "/v1/secrets/aud/one")
        await api.request("GET", "/v1/secrets/aud/missing")
        bare = await identity(api, ["secrets:read"])
        await api.request("GET", "/v1/secrets/aud/one", token=bare["token"])
        status, page, _ = await api.request("GET", "/v1/audit/events?path_prefix=secrets/aud/")
        assert status == 200
        outcomes = [(e["action"].split(" (")[0], e["resource"], e["outcome"]) for e in page["items"]]
        assert ("PUT /v1/secrets/{tail}", "secrets/aud/one", "ok") in outcomes
        assert ("GET /v1/secrets/{tail}", "secrets/aud/missing", "secret_not_found") in outcomes
        assert ("GET /v1/secrets/{tail}", "secrets/aud/one", "access_denied") in outcomes
        entry = page["items"][0]
        assert entry["request_id"].startswith("req_") and entry["client_ip"] == "127.0.0.1"
        denied = (await api.request("GET", "/v1/audit/events?code=access_denied"))[1]["items"]
        assert {e["identity_id"] for e in denied} == {bare["id"]}
        mine = (await api.request("GET", f"/v1/audit/events?identity_id={bare['id']}&limit=1"))[1]
        assert len(mine["items"]) == 1
        status, bad, headers = await api.request("GET", "/v1/audit/events?since=yesterday")
        assert_envelope(status, bad, headers, "validation_error")

        status, matched, _ = await api.request("POST", "/v1/audit/events:match", json={"value": value})
        assert status == 200 and [e["resource"] for e in matched["items"]] == ["secrets/aud/one"]
        status, verdict, _ = await api.request("GET", "/v1/audit/verify")
        assert verdict["ok"] is True and verdict["checked"] >= 8

        pool = platform.runtimes["gateway"].pool
        assert pool is not None
        schema = platform.settings.schema_for("gateway")
        text = " ".join(str(tuple(r)) for r in await pool.fetch(f'SELECT * FROM "{schema}".audit_log'))
        assert value not in text and api.token not in text  # stored as HMACs only
        victim = page["items"][1]["seq"]
        await pool.execute(f'UPDATE "{schema}".audit_log SET outcome = $2 WHERE seq = $1', victim, "tampered")
        status, verdict, _ = await api.request("GET", "/v1/audit/verify")
        assert verdict["ok"] is False and verdict["first_broken"]["seq"] == victim
        assert "edited" in verdict["first_broken"]["reason"]
    finally:
        await platform.close()


async def test_a_request_whose_audit_entry_cant_be_written_fails_with_storage_error(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    platform, api = await own_platform(tmp_path, pg_dsn, http)
    try:
        pool = platform.runtimes["gateway"].pool
        assert pool is not None
        schema = platform.settings.schema_for("gateway")
        await pool.execute(f'ALTER TABLE "{schema}".audit_log ADD CONSTRAINT no_forbidden_path'
                           " CHECK (resource <> 'secrets/unauditable')")
        status, body, headers = await api.request("GET", "/v1/secrets/unauditable")
        assert_envelope(status, body, headers, "storage_error")
        assert (await api.request("GET", "/v1/auth/whoami"))[0] == 200
    finally:
        await platform.close()


async def test_a_request_whose_audit_database_is_away_is_service_unavailable(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit log's database restarting (``make chaos`` saw it) is transient: 503, not 500."""
    platform, api = await own_platform(tmp_path, pg_dsn, http)
    try:
        assert platform.app is not None

        async def away(**kwargs: Any) -> None:
            raise asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")

        with monkeypatch.context() as m:
            m.setattr(platform.app[STATE].audit, "record", away)
            status, body, headers = await api.request("GET", "/v1/secrets/any")
            assert_envelope(status, body, headers, "service_unavailable")
        assert (await api.request("GET", "/v1/auth/whoami"))[0] == 200
    finally:
        await platform.close()


# -- metrics and OpenAPI ----------------------------------------------------------------------

async def test_metrics(api: Api) -> None:
    await api.request("GET", "/v1/auth/whoami")
    async with api.session.get(api.url + "/metrics") as resp:
        assert resp.status == 200 and resp.content_type == "text/plain"
        text = await resp.text()
    for needle in ('coffer_http_requests_total{code="200",method="GET",route="/v1/auth/whoami"}',
                   "coffer_http_request_duration_seconds_bucket", 'coffer_rpc_duration_seconds_count{method="ping"',
                   'coffer_outbox_backlog{service="secrets"}', "process_resident_memory_bytes"):
        assert needle in text, needle
    assert "ten_" not in text and "idn_" not in text  # no tenant data


def gauge(text: str, name: str, service: str) -> float:
    found = re.search(rf'^{name}{{service="{service}"}} (\S+)$', text, re.M)
    assert found, f"{name} of {service} not in /metrics"
    return float(found.group(1))


async def test_metrics_tell_the_alert_rules_what_services_count(api: Api, platform: Platform) -> None:
    """deploy/prometheus's rules read these: every service answering, and what each counts (issue #35); a
    certificate issued for a day shows as expiring within 7 days at the next scrape."""
    async def scrape() -> str:
        async with api.session.get(api.url + "/metrics") as resp:
            assert resp.status == 200
            return await resp.text()

    text = await scrape()
    for service in ("gateway", "secrets", "pki", "lease", "webhooks"):
        assert gauge(text, "coffer_service_up", service) == 1.0
    assert gauge(text, "coffer_webhook_deliveries_failed", "webhooks") >= 0
    assert gauge(text, "coffer_webhook_deliveries_pending", "webhooks") >= 0
    assert gauge(text, "coffer_lease_revocations_retrying", "lease") == 0
    # only a scrape asks for the counts: a health check (a balancer's, every second) costs no query for them
    ctx = RequestContext()
    assert (await platform.runtimes["webhooks"]._ping({}, ctx))["gauges"] == {}
    counted = (await platform.runtimes["webhooks"]._ping({"gauges": True}, ctx))["gauges"]
    assert set(counted) == {"coffer_webhook_deliveries_failed", "coffer_webhook_deliveries_pending"}
    before = gauge(text, "coffer_certificates_expiring", "pki")
    ca = await make_ca(api)
    await issue(api, await make_role(api, ca["id"]), ttl="24h")
    assert gauge(await scrape(), "coffer_certificates_expiring", "pki") == before + 1


async def test_openapi_document_is_valid_and_covers_every_route(api: Api, platform: Platform) -> None:
    status, doc, _ = await api.request("GET", "/v1/openapi.json", token=None)
    assert status == 200 and doc["openapi"] == "3.1.0"
    validate(doc)
    assert platform.app is not None
    def shape(path: str) -> str:  # every parameter alike: {tail:.+}, {name}, {id}:{action:(a|b)} …
        return re.sub(r"\{[^{}]*(\{[^{}]*\}[^{}]*)*\}", "{}", path)

    documented = {(m.upper(), shape(p)) for p, ops in doc["paths"].items() for m in ops}
    for resource in platform.app.router.resources():
        for route in resource:
            if route.method == "HEAD":
                continue
            path = shape(resource.canonical).replace(":{}", "")
            assert any(m == route.method and (p == path or p.startswith(path)) for m, p in documented), path
    put_secret = doc["paths"]["/v1/secrets/{path}"]["put"]
    assert {"200", "201", "409", "422", "401", "403"} <= set(put_secret["responses"])
    conflict = put_secret["responses"]["409"]["content"]["application/json"]["schema"]
    assert set(conflict["properties"]["error"]["properties"]["code"]["enum"]) == {"version_conflict",
                                                                                   "secret_exists"}
    codes = {c for op in (o for ops in doc["paths"].values() for o in ops.values())
             for r in op["responses"].values() for c in
             r.get("content", {}).get("application/json", {}).get("schema", {}).get("properties", {})
             .get("error", {}).get("properties", {}).get("code", {}).get("enum", [])}
    assert codes <= set(REGISTRY)


@pytest.mark.timeout(600)
async def test_the_api_under_the_fuzzer_short(tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession) -> None:
    """``make fuzz``'s run, shorter (>= 2,000 cases): every check but the 405 one, ours included, 0 failures."""
    platform, api = await own_platform(tmp_path, pg_dsn, http, rate_limits="read=100000/s,write=100000/s,"
                                       "auth=100000/s,pki=100000/s")
    try:
        await put(api, "fuzz/seed")
        proc = await asyncio.create_subprocess_exec(
            *fuzz.schemathesis_command(api.url, api.token or "", max_examples=8, seed=7, workers="1"),
            cwd=ROOT, env=fuzz.schemathesis_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        cases = fuzz.cases_of(text)
        print(text[-3000:])
        print(f"schemathesis generated {cases} cases")
        assert proc.returncode == 0, text[-8000:]
        assert cases >= 2000
    finally:
        await platform.close()

