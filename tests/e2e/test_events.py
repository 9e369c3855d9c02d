"""``GET /v1/events`` through the gateway (issue #31, api.md §12), on a platform of the module's own in both run
modes; on RabbitMQ with a second gateway (same bus and database) where a stream must see every event too.

The module's platform keeps events 3 s (``reset`` after the retention is waited for, once), allows 3 streams
per identity and 8 KiB of events waiting for a slow reader, and beats every 0.5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator

from services.gateway.state import STATE
from services.platform import Platform
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.sse import stream
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_hardening import EXPLOSIVE
from tests.e2e.test_tenants import tenant

RETENTION = 3.0
STREAM_SETTINGS = {"event_retention": "3s", "event_streams": 3, "event_stream_buffer": 8192, "event_heartbeat": 0.5}
READER = ["secrets:read", "secrets:write", "events"]


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn, **STREAM_SETTINGS) as p:
        yield p


@pytest.fixture(scope="module")
async def admin(platform: Platform, http: aiohttp.ClientSession) -> dict[str, Any]:
    """``sys/init`` on this module's platform: its answer, and an ``api`` client holding the admin token."""
    assert platform.url
    api = await initialised(platform, http)
    status, me, _ = await api.request("GET", "/v1/auth/whoami")
    assert status == 200, me
    return {"tenant_id": me["tenant"]["id"], "api": api}


@pytest.fixture(scope="module")
async def gateways(platform: Platform, admin: dict[str, Any], pg_dsn: str,
                   http: aiohttp.ClientSession) -> AsyncIterator[list[str]]:
    """The gateways' addresses: this platform's, and on RabbitMQ a second gateway on the same bus and database."""
    assert platform.url
    if platform.settings.amqp_url is None:
        yield [platform.url]
        return
    second = Platform({**platform.values, "http_port": 0}, pg_dsn, services=("gateway",))
    await second.start()
    try:
        assert second.url
        yield [platform.url, second.url]
    finally:
        await second.close()


@pytest.fixture(scope="module")
async def reader(admin: dict[str, Any]) -> dict[str, Any]:
    """An identity that may list (and write) secrets under ``open/`` and nothing else."""
    return await identity(admin["api"], READER, [allow(["secrets/open/**"], ["read", "list", "write"])])


async def put(api: Api, path: str, token: str | None = None) -> tuple[str, float]:
    """Write a secret; its value and when its answer came."""
    value = remember_secret(f"value-{uuid.uuid4().hex}")
    status, body, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": value},
                                        **({"token": token} if token else {}))
    assert status in (200, 201), body
    return value, time.monotonic()


async def test_a_write_arrives_on_every_gateway_within_a_second_with_metadata_only(
        admin: dict[str, Any], gateways: list[str], reader: dict[str, Any], http: aiohttp.ClientSession) -> None:
    api: Api = admin["api"]
    path = f"open/{name('app')}/db"
    async with contextlib.AsyncExitStack() as stack:
        streams = [await stack.enter_async_context(stream(http, url, reader["token"])) for url in gateways]
        value, answered = await put(api, path)
        for sse in streams:
            got = await sse.until("secret.created", 1.0, path=path)
            assert time.monotonic() - answered < 1.0
            body = got["data"]
            assert got["id"] == body["id"] and body["type"] == "secret.created"
            assert set(body) == {"id", "type", "tenant_id", "occurred_at", "request_id", "data"}
            assert body["tenant_id"] == admin["tenant_id"]
            assert body["data"] == {"path": path, "version": 1, "secret_type": "generic"}
            await put(api, path)
            assert (await sse.until("secret.updated", 1.0, path=path))["data"]["data"]["version"] == 2
            assert value.encode() not in sse.raw  # metadata only, never a value
        # the streams are audited when they start, not when they end
        status, page, _ = await api.request("GET", f"/v1/audit/events?identity_id={reader['id']}&limit=1000")
        assert status == 200
        opened = [e for e in page["items"] if e["action"] == "GET /v1/events"]
        assert opened and opened[-1]["outcome"] == "ok" and opened[-1]["status"] == 200, page["items"][-3:]


async def test_filters_by_type_and_path(admin: dict[str, Any], gateways: list[str], reader: dict[str, Any],
                                        http: aiohttp.ClientSession) -> None:
    api: Api = admin["api"]
    base = f"open/{name('f')}"
    async with stream(http, gateways[-1], reader["token"],
                      params={"types": "secret.updated,lease.*", "path_pattern": f"{base}/keep/**"}) as sse:
        for path in (f"{base}/keep/a", f"{base}/other/a", f"{base}/keep/a", f"{base}/other/a"):
            await put(api, path)
        got = await sse.next()
        assert (got["event"], got["data"]["data"]["path"]) == ("secret.updated", f"{base}/keep/a")
        await sse.nothing_within(0.3)


async def test_hidden_paths_and_other_tenants_never_arrive_and_policies_are_judged_on_delivery(
        admin: dict[str, Any], gateways: list[str], http: aiohttp.ClientSession) -> None:
    api: Api = admin["api"]
    base = name("h")
    watcher = await identity(api, READER, [allow([f"secrets/{base}/open/**", f"secrets/{base}/later/**"], ["list"])])
    no_secrets_scope = await identity(api, ["events"], [allow(["**"], ["list"])])
    other = await tenant(api)
    other_admin = await identity(api, ["secrets:read", "secrets:write", "events"],
                                 [allow(["**"], ["read", "list", "write"])], tenant=other["id"])
    async with stream(http, gateways[0], watcher["token"]) as sse, \
            stream(http, gateways[-1], no_secrets_scope["token"]) as blind:
        hidden_value, _ = await put(api, f"{base}/hidden/x")
        await put(api, f"{base}/open/x", other_admin["token"])  # the same path in another tenant
        await put(api, f"{base}/open/marker")
        got = await sse.next()
        assert got["data"]["data"]["path"] == f"{base}/open/marker"  # nothing came before it
        assert got["data"]["tenant_id"] == admin["tenant_id"]
        assert hidden_value.encode() not in sse.raw and b"hidden" not in sse.raw
        # the policy changes: open/ is no longer listable, later/ still is; judged when each event goes out
        status, _, _ = await api.request("PUT", f"/v1/policies/{watcher['policy']}", json={
            "rules": [allow([f"secrets/{base}/later/**"], ["list"])]})
        assert status == 200
        await asyncio.sleep(0.1)  # the policy event reaching the other gateway
        await put(api, f"{base}/open/after")
        await put(api, f"{base}/later/marker")
        got = await sse.next()
        assert got["data"]["data"]["path"] == f"{base}/later/marker"
        await blind.nothing_within(0.2)  # events scope alone lists no secret
    async with stream(http, gateways[-1], other_admin["token"]) as theirs:
        await put(api, f"{base}/open/ours")
        await put(api, f"{base}/theirs", other_admin["token"])
        got = await theirs.next()
        assert (got["data"]["data"]["path"], got["data"]["tenant_id"]) == (f"{base}/theirs", other["id"])


async def test_resume_after_a_drop_on_any_gateway_and_reset_past_the_retention(
        admin: dict[str, Any], gateways: list[str], reader: dict[str, Any], http: aiohttp.ClientSession) -> None:
    api: Api = admin["api"]
    base = f"open/{name('r')}"
    async with stream(http, gateways[0], reader["token"], params={"path_pattern": f"{base}/**"}) as sse:
        await put(api, f"{base}/1")
        first = await sse.next()
    for i in (2, 3):  # while nobody reads
        await put(api, f"{base}/{i}")
    await put(api, "open/elsewhere")
    async with stream(http, gateways[-1], reader["token"], params={"path_pattern": f"{base}/**"},
                      headers={"Last-Event-ID": first["id"]}) as sse:
        assert [(await sse.next())["data"]["data"]["path"] for _ in range(2)] == [f"{base}/2", f"{base}/3"]
        await put(api, f"{base}/4")
        assert (await sse.next())["data"]["data"]["path"] == f"{base}/4"
    # an id nobody ever sent, another tenant's, or one past the retention: a reset, then live events
    await asyncio.sleep(RETENTION + 0.2)
    for resume in (str(uuid.uuid4()), first["id"]):
        async with stream(http, gateways[-1], reader["token"], params={"path_pattern": f"{base}/**"},
                          headers={"Last-Event-ID": resume}) as sse:
            got = await sse.next()
            assert (got["event"], got["data"], "id" in got) == ("reset", {"reason": "not_kept"}, False)
            await put(api, f"{base}/5")
            assert (await sse.next())["data"]["data"]["path"] == f"{base}/5"


async def test_bad_input_is_refused_with_a_clear_code_at_once(admin: dict[str, Any], reader: dict[str, Any],
                                                              gateways: list[str]) -> None:
    api: Api = admin["api"]
    cases: list[tuple[dict[str, str], dict[str, str], str]] = [
        ({"path_pattern": "a" * 5000}, {}, "validation_error"),
        ({"path_pattern": "app/[z-a]"}, {}, "invalid_glob"),
        ({"path_pattern": "ключ/**"}, {}, "invalid_glob"),
        ({"types": "secret.*,Secret"}, {}, "validation_error"),
        ({"types": ",".join(["secret.*"] * 21)}, {}, "validation_error"),
        ({"types": "x" * 5000}, {}, "validation_error"),
        ({}, {"Last-Event-ID": "not-an-id"}, "invalid_request"),
        ({}, {"Last-Event-ID": "1" * 500}, "invalid_request"),
    ]
    for params, headers, code in cases:
        started = time.monotonic()
        status, body, answer = await api.request("GET", "/v1/events", token=reader["token"], params=params,
                                                 headers=headers)
        assert time.monotonic() - started < 0.5
        err = assert_envelope(status, body, answer, code)
        assert "a" * 600 not in err["message"] and "x" * 600 not in str(err)
    no_scope = await identity(api, ["secrets:read"], [allow(["**"], ["list"])])
    status, body, answer = await api.request("GET", "/v1/events", token=no_scope["token"])
    assert assert_envelope(status, body, answer, "insufficient_scope")["details"] == {"required_scope": "events"}


async def test_a_pathological_pattern_costs_nothing_and_a_quiet_stream_beats(
        admin: dict[str, Any], reader: dict[str, Any], gateways: list[str], http: aiohttp.ClientSession) -> None:
    api: Api = admin["api"]
    async with stream(http, gateways[0], reader["token"], params={"path_pattern": EXPLOSIVE}) as sse:
        deep = "open/" + "/".join(["d" * 30] * 14)
        started = time.monotonic()
        await asyncio.gather(*(put(api, f"{deep}/{i}") for i in range(10)))
        assert time.monotonic() - started < 2.0
        await sse.nothing_within(1.2)  # nothing matches; a quiet stream still gets its heartbeat comment
        assert sse.comments >= 1 and sse.raw.count(b": keep-alive\n\n") == sse.comments


async def test_streams_per_identity_are_limited(admin: dict[str, Any], gateways: list[str],
                                                http: aiohttp.ClientSession) -> None:
    limited = await identity(admin["api"], READER, [allow(["secrets/open/**"], ["list"])])
    api = Api(gateways[0], http)
    async with stream(http, gateways[0], limited["token"]), stream(http, gateways[0], limited["token"]):
        async with stream(http, gateways[0], limited["token"]):
            status, body, headers = await api.request("GET", "/v1/events", token=limited["token"])
            err = assert_envelope(status, body, headers, "rate_limited")
            assert err["details"]["limit"] == 3 and headers["Retry-After"] == "1"
        # one closed: a new one is allowed once the gateway has seen it go
        deadline = time.monotonic() + 3
        while True:
            try:
                async with stream(http, gateways[0], limited["token"]):
                    break
            except AssertionError:
                assert time.monotonic() < deadline, "the closed stream still counts"
                await asyncio.sleep(0.1)


async def test_a_stream_ends_when_its_token_expires_or_is_revoked(
        platform: Platform, admin: dict[str, Any], gateways: list[str], reader: dict[str, Any],
        http: aiohttp.ClientSession) -> None:
    signer = platform.app[STATE].signer
    short, _ = signer.issue(reader["id"], admin["tenant_id"], tuple(READER), ttl=2)
    remember_secret(short)
    async with stream(http, gateways[-1], short) as sse:
        started = time.monotonic()
        got = await sse.next(4)
        assert (got["event"], got["data"]["code"]) == ("token_expired", "token_expired")
        assert 1.0 < time.monotonic() - started < 3.5
        with pytest.raises(EOFError):
            await sse.next(2)
    fresh, _ = signer.issue(reader["id"], admin["tenant_id"], tuple(READER))
    remember_secret(fresh)
    async with stream(http, gateways[-1], fresh) as sse:
        status, _, _ = await Api(gateways[0], http).request("POST", "/v1/auth/revoke", token=fresh,
                                                            json={"token": fresh})
        assert status == 204
        got = await sse.next(2)
        assert (got["event"], got["data"]["code"]) == ("token_revoked", "token_revoked")
        with pytest.raises(EOFError):
            await sse.next(2)


async def test_a_reader_that_stops_reading_is_cut_while_writers_keep_their_latency(
        admin: dict[str, Any], gateways: list[str], reader: dict[str, Any], tmp_path: Path) -> None:
    """A raw connection with a small receive window that reads nothing during a burst of writes."""
    api: Api = admin["api"]
    base = f"open/{name('slow')}"

    async def burst(n: int) -> list[float]:
        took = []
        for i in range(n):
            started = time.monotonic()
            await put(api, f"{base}/{i % 20}")
            took.append(time.monotonic() - started)
        return took

    calm = await burst(20)
    host, port = gateways[-1].removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (host, int(port)))
    await loop.sock_sendall(sock, (f"GET /v1/events?path_pattern={base}/** HTTP/1.1\r\nHost: {host}\r\n"
                                   f"Authorization: Bearer {reader['token']}\r\n\r\n").encode())
    try:
        busy = await burst(300)
        assert statistics.median(busy) < max(0.1, 3 * statistics.median(calm)), (calm, busy)
        received = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            if not chunk:
                break
            received += chunk
        assert b"HTTP/1.1 200" in received[:20]
        assert received.count(b"event: secret.") < 300  # it was cut before the burst was over
        tail = received[received.rindex(b"event: "):]
        assert tail.startswith(b'event: reset\r\n') or tail.startswith(b'event: reset\n'), tail[:200]
        assert b'"too_far_behind"' in tail
    finally:
        sock.close()


async def test_the_asyncapi_description_is_public_and_every_streamed_event_agrees_with_it(
        admin: dict[str, Any], gateways: list[str], http: aiohttp.ClientSession) -> None:
    api: Api = admin["api"]
    status, doc, headers = await api.request("GET", "/v1/asyncapi.json", token=None)
    assert status == 200 and doc["asyncapi"] == "3.0.0" and headers["Content-Type"].startswith("application/json")
    by_type = {m["name"]: m for m in doc["components"]["messages"].values()}
    base = name("described")
    seen: dict[str, dict[str, Any]] = {}
    async with stream(http, gateways[-1], api.token or "") as sse:
        await put(api, f"{base}/s")
        await put(api, f"{base}/s")
        for method, suffix in (("DELETE", ""), ("POST", ":restore"), ("POST", ":purge")):
            assert (await api.request(method, f"/v1/secrets/{base}/s{suffix}"))[0] in (200, 204)
        svc = await identity(api, ["secrets:read"], [allow([f"secrets/{base}/**"], ["read"])])
        assert (await api.request("POST", "/v1/auth/revoke", json={"token": svc["token"]}))[0] == 204
        assert (await api.request("DELETE", f"/v1/identities/{svc['id']}"))[0] == 204
        wanted = {"secret.created", "secret.updated", "secret.deleted", "secret.restored", "secret.purged",
                  "policy.created", "policy.updated", "token.revoked"}
        while not wanted <= set(seen):
            got = await sse.next(3)
            seen.setdefault(got["event"], got["data"])
    for event_type, event in seen.items():
        schema = {"$ref": by_type[event_type]["payload"]["$ref"], "components": doc["components"]}
        errors = [e.message for e in Draft202012Validator(schema).iter_errors(event)]
        assert not errors, (event_type, event, errors)
