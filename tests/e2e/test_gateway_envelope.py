"""Every failure kind leaves the gateway as the envelope, with its code's status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from services.gateway.state import STATE
from services.platform import Platform
from shared.bus import RabbitBus
from shared.context import RequestContext
from shared.errors import REGISTRY, SecretNotFound
from shared.logging import PROCESSORS
from tests.conftest import Api, initialised, start_platform


def assert_envelope(status: int, body: Any, headers: Any, code: str) -> dict[str, Any]:
    assert status == REGISTRY[code].status, (status, body)
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"code", "message", "details", "request_id"}
    assert err["code"] == code and isinstance(err["message"], str) and isinstance(err["details"], dict)
    assert err["request_id"] == headers["X-Request-ID"]
    return dict(err)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nope"), ("GET", "/"), ("GET", "/v1/secrets/../../etc/passwd"),
     ("GET", "/v1/%2e%2e/%00"), ("POST", "/v1/ключ/🔑"), ("GET", "/v1/" + "a" * 5000)],
)
async def test_unknown_route_is_invalid_request(api: Api, method: str, path: str) -> None:
    status, body, headers = await api.request(method, path)
    err = assert_envelope(status, body, headers, "invalid_request")
    assert len(err["message"]) < 300


async def test_wrong_method_is_invalid_request_naming_the_allowed_ones(api: Api) -> None:
    status, body, headers = await api.request("DELETE", "/v1/sys/health")
    err = assert_envelope(status, body, headers, "invalid_request")
    assert "GET" in err["details"]["allowed_methods"]


@pytest.mark.parametrize(
    ("raw", "ctype"),
    [(b"{not json", "application/json"), (b"[1,2]", "application/json"), (b'"str"', "application/json"),
     (b"\xff\xfe", "application/json"), (b"null", "application/json")],
)
async def test_non_json_or_non_object_body_is_invalid_request(api: Api, raw: bytes, ctype: str) -> None:
    status, body, headers = await api.request(
        "POST", "/v1/auth/token", data=raw, headers={"Content-Type": ctype}, token=None)
    assert_envelope(status, body, headers, "invalid_request")


async def test_body_over_one_mib_is_invalid_request(api: Api, platform: Platform) -> None:
    assert platform.app is not None
    big = b'{"client_id": "' + b"a" * (platform.app[STATE].settings.max_body_bytes + 1) + b'"}'
    status, body, headers = await api.request(
        "POST", "/v1/auth/token", data=big, headers={"Content-Type": "application/json"}, token=None)
    err = assert_envelope(status, body, headers, "invalid_request")
    assert err["details"]["max_bytes"] == 1024 * 1024


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"client_id": 5, "client_secret": "x"}, "client_id"),
     ({"client_secret": "x"}, "client_id"),
     ({"client_id": "a", "client_secret": "x", "scopes": "admin"}, "scopes"),
     ({"client_id": "a", "client_secret": "x", "scopes": ["root"]}, "scopes"),
     ({"client_id": "a", "client_secret": "x", "extra": 1}, "extra"),
     ({"client_id": "", "client_secret": "x"}, "client_id")],
)
async def test_wrong_fields_are_validation_error_with_fields(api: Api, payload: Any, field: str) -> None:
    status, body, headers = await api.request("POST", "/v1/auth/token", json=payload, token=None)
    err = assert_envelope(status, body, headers, "validation_error")
    assert field in {f["field"] for f in err["details"]["fields"]}
    assert all(set(f) == {"field", "message"} for f in err["details"]["fields"])


async def test_unexpected_exception_is_internal_error_without_details(
    api: Api, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert platform.app is not None

    async def broken(*args: Any) -> Any:
        raise RuntimeError("SELECT secret FROM t -- password=hunter2")

    monkeypatch.setattr(platform.app[STATE].identities, "whoami", broken)
    with capture_logs(processors=PROCESSORS[:1]) as logs:
        status, body, headers = await api.request("GET", "/v1/auth/whoami")
    err = assert_envelope(status, body, headers, "internal_error")
    assert "hunter2" not in str(body) and "SELECT" not in str(body) and "Traceback" not in str(body)
    crash = next(e for e in logs if e["event"] == "request_crashed")
    assert crash["request_id"] == err["request_id"]


async def test_request_id_is_kept_when_sane_and_replaced_when_not(api: Api) -> None:
    _, body, headers = await api.request("GET", "/v1/nope", headers={"X-Request-ID": "req_mine-1"})
    assert headers["X-Request-ID"] == "req_mine-1" == body["error"]["request_id"]
    status, _, headers = await api.request("GET", "/v1/sys/health", headers={"X-Request-ID": "bad id\t<x>"})
    assert status == 200 and headers["X-Request-ID"].startswith("req_")
    assert headers["Server"] == "coffer"


async def test_request_id_reaches_the_services_log_line(api: Api) -> None:
    with capture_logs(processors=PROCESSORS[:1]) as logs:
        status, _, _ = await api.request("GET", "/v1/sys/health", headers={"X-Request-ID": "req_trace42"})
        await asyncio.sleep(0.1)
    assert status == 200
    handled = [e for e in logs if e["event"] == "rpc_handled" and e.get("method") == "ping"]
    assert len(handled) >= 4 and all(e["request_id"] == "req_trace42" for e in handled)


async def test_error_reply_from_a_service_keeps_its_code_and_unknown_codes_become_internal(
    tmp_path: Any, private_amqp: str, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """The real gateway, and in place of the secrets service a stand-in on RabbitMQ answering with errors."""
    gateway = await start_platform(tmp_path, private_amqp, pg_dsn, services=("gateway",))
    stand_in = RabbitBus(private_amqp, name="secrets-stand-in")
    await stand_in.start()
    answers: dict[str, Exception] = {
        "missing": SecretNotFound("Secret 'missing' not found", details={"path": "missing"}),
        "alien": _alien_error(),
        "crash": RuntimeError("connection string postgres://u:hunter2@db"),
    }

    async def get(payload: dict[str, Any], ctx: RequestContext) -> Any:
        raise answers[payload["path"]]

    await stand_in.serve("secrets", {"get": get})
    try:
        api = await initialised(gateway, http)
        status, body, headers = await api.request("GET", "/v1/secrets/missing")
        err = assert_envelope(status, body, headers, "secret_not_found")
        assert err["details"] == {"path": "missing"}
        status, body, headers = await api.request("GET", "/v1/secrets/alien")
        assert_envelope(status, body, headers, "internal_error")
        status, body, headers = await api.request("GET", "/v1/secrets/crash")
        assert_envelope(status, body, headers, "internal_error")
        assert "hunter2" not in str(body)
        status, body, headers = await api.request("GET", "/v1/secrets?prefix=")  # "list" is not served
        assert_envelope(status, body, headers, "service_unavailable")
    finally:
        await stand_in.close()
        await gateway.close()


def _alien_error() -> Exception:
    from shared.errors import CofferError

    err = CofferError("made up")
    err.code = "teapot_overflow"  # type: ignore[misc]
    return err


async def test_health_all_ok(api: Api) -> None:
    status, body, _ = await api.request("GET", "/v1/sys/health", token=None)
    assert status == 200
    assert body == {"status": "ok", "services": dict.fromkeys(
        ("gateway", "secrets", "pki", "lease", "webhooks"), "ok")}


async def test_health_names_a_service_that_is_not_running_within_the_timeout(
    tmp_path: Any, amqp_url: str, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    # the in-process bus: no other test's pki can answer
    platform = await start_platform(
        tmp_path, None, pg_dsn, services=("gateway", "secrets", "lease", "webhooks"))
    try:
        assert platform.url
        started = time.monotonic()
        status, body, headers = await Api(platform.url, http).request("GET", "/v1/sys/health")
        took = time.monotonic() - started
        assert status == 503 and took <= platform.runtimes["gateway"].settings.health_timeout + 0.5  # type: ignore[attr-defined]
        assert body["status"] == "degraded" and body["services"]["pki"] == "unavailable"
        assert body["services"]["secrets"] == "ok"
        assert body["error"]["code"] == "service_unavailable"
        assert body["error"]["details"] == {"unavailable": ["pki"]}
        assert body["error"]["request_id"] == headers["X-Request-ID"]
    finally:
        await platform.close()


async def test_services_gone_on_rabbitmq_are_503_within_the_timeout(
    tmp_path: Any, private_amqp: str, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """Their queues exist (durable) but nobody consumes them: calls time out, never hang."""
    everything = await start_platform(tmp_path, private_amqp, pg_dsn)
    await everything.close()
    gateway = await start_platform(tmp_path, private_amqp, pg_dsn, services=("gateway",))
    try:
        assert gateway.url
        started = time.monotonic()
        status, body, _ = await Api(gateway.url, http).request("GET", "/v1/sys/health")
        assert status == 503 and time.monotonic() - started <= gateway.runtimes["gateway"].settings.health_timeout + 0.5  # type: ignore[attr-defined]
        assert body["error"]["details"]["unavailable"] == ["lease", "pki", "secrets", "webhooks"]
        assert body["services"]["gateway"] == "ok"
    finally:
        await gateway.close()


async def test_a_storage_failure_in_the_gateway_is_storage_error(
    api: Api, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert platform.app is not None

    async def broken(*args: Any) -> Any:
        raise asyncpg.exceptions.UndefinedTableError('relation "password=hunter2" does not exist')

    monkeypatch.setattr(platform.app[STATE].identities, "whoami", broken)
    status, body, headers = await api.request("GET", "/v1/auth/whoami")
    assert_envelope(status, body, headers, "storage_error")
    assert "hunter2" not in str(body)


# what a PostgreSQL restart or failover looks like to a client (seen by `make chaos`, once answered 500)
DATABASE_AWAY = [
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up (password=hunter2)"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command hunter2"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection to password=hunter2 lost"),
    ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432) hunter2"),
    ConnectionResetError(104, "Connection reset by peer hunter2"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    asyncpg.exceptions.InternalClientError("PoolConnectionHolder.connect() called while another connection"),
]


@pytest.mark.parametrize("away", DATABASE_AWAY, ids=lambda e: type(e).__name__)
async def test_the_gateways_database_away_is_service_unavailable(
    api: Api, platform: Platform, monkeypatch: pytest.MonkeyPatch, away: Exception
) -> None:
    """A restarting or unreachable database is transient: 503 ``service_unavailable`` (try again), not 500."""
    assert platform.app is not None

    async def gone(*args: Any) -> Any:
        raise away

    monkeypatch.setattr(platform.app[STATE].identities, "whoami", gone)
    status, body, headers = await api.request("GET", "/v1/auth/whoami")
    assert_envelope(status, body, headers, "service_unavailable")
    assert "hunter2" not in str(body)


@contextlib.asynccontextmanager
async def gateway_and_secrets(tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
                              ) -> AsyncIterator[tuple[Platform, Api, asyncpg.Pool]]:
    """The gateway and the secrets service on the in-process bus, ``a/b`` written once; the secrets
    service's pool, for a test to break."""
    platform = await start_platform(tmp_path, None, pg_dsn, services=("gateway", "secrets"))
    try:
        api = await initialised(platform, http)
        assert (await api.request("PUT", "/v1/secrets/a/b", json={"value": "v"}))[0] == 201
        pool = platform.runtimes["secrets"].pool
        assert pool is not None
        yield platform, api, pool
    finally:
        await platform.close()


async def test_a_storage_failure_behind_the_bus_is_storage_error(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """The secrets service's table is gone: every call that touches it answers storage_error, naming no SQL."""
    async with gateway_and_secrets(tmp_path, pg_dsn, http) as (platform, api, pool):
        await pool.execute(f'DROP TABLE "{platform.settings.schema_for("secrets")}".secret_versions CASCADE')
        for method, body in (("GET", None), ("PUT", {"value": "w"})):
            status, answer, headers = await api.request(method, "/v1/secrets/a/b", json=body)
            err = assert_envelope(status, answer, headers, "storage_error")
            assert "secret_versions" not in err["message"] and "SELECT" not in str(answer)


@pytest.mark.parametrize("away", DATABASE_AWAY, ids=lambda e: type(e).__name__)
async def test_a_services_database_away_is_service_unavailable(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch, away: Exception
) -> None:
    """Behind the bus too: the secrets service's database restarting answers 503 through the gateway, and
    the answer names nothing of the failure; once it is back the same request succeeds."""
    async with gateway_and_secrets(tmp_path, pg_dsn, http) as (_, api, pool):

        def gone(*args: Any, **kwargs: Any) -> Any:
            raise away

        with monkeypatch.context() as m:
            m.setattr(pool, "acquire", gone)
            for method, body in (("GET", None), ("PUT", {"value": "w"})):
                status, answer, headers = await api.request(method, "/v1/secrets/a/b", json=body)
                assert_envelope(status, answer, headers, "service_unavailable")
                assert "hunter2" not in str(answer)
        status, got, _ = await api.request("GET", "/v1/secrets/a/b")
        assert status == 200 and got["value"] == "v" and got["version"] == 1


async def test_connections_cut_by_the_database_under_load_answer_503_never_500(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """``make chaos``'s PostgreSQL restart, in the suite: the server ends the secrets service's connections
    (``pg_terminate_backend``, as a restart or failover does) again and again while writes and reads run.
    Every answer is a success or 503 ``service_unavailable``; none is a 500."""
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with gateway_and_secrets(tmp_path, pg_dsn, http) as (platform, api, _):
            app_name = f"coffer-{platform.settings.schema_for('secrets')}"
            stop = asyncio.Event()

            async def cut() -> int:
                n = 0
                while not stop.is_set():
                    n += len(await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                               " WHERE application_name = $1", app_name))
                    await asyncio.sleep(0.02)
                return n

            async def client(i: int) -> list[tuple[int, str]]:
                seen = []
                for n in range(40):
                    method, body = ("PUT", {"value": f"v{n}"}) if n % 2 else ("GET", None)
                    status, answer, _ = await api.request(method, f"/v1/secrets/cut/k{i}", json=body)
                    seen.append((status, answer["error"]["code"] if status >= 400 else ""))
                return seen

            cutter = asyncio.create_task(cut())
            answers = [a for seen in await asyncio.gather(*(client(i) for i in range(8))) for a in seen]
            stop.set()
            cuts = await cutter
            print(f"{cuts} connections cut; answers: {sorted(set(answers))}")
            assert cuts > 0
            assert not [a for a in answers if a[0] >= 500 and a[1] != "service_unavailable"], answers
            assert {s for s, _ in answers} <= {200, 201, 404, 503}
    finally:
        await admin.close()


async def test_a_nul_character_anywhere_is_refused_not_a_storage_failure(api: Api) -> None:
    """PostgreSQL stores no NUL: in a body's strings and keys, or a query, it is the caller's 422."""
    for method, path, kwargs in (
            ("PUT", "/v1/secrets/nul/meta", {"json": {"value": "v", "metadata": {"k": "a\x00b"}}}),
            ("PUT", "/v1/secrets/nul/key", {"json": {"value": "v", "metadata": {"k\x00": "v"}}}),
            ("POST", "/v1/policies", {"json": {"name": "nul", "description": "\x00", "rules": [
                {"effect": "allow", "paths": ["x"], "capabilities": ["read"]}]}}),
            ("POST", "/v1/subscriptions", {"json": {"webhook_id": "wh_\x00", "event_types": ["#"]}}),
            ("GET", "/v1/leases?engine=a%002", {}), ("GET", "/v1/secrets?prefix=a%00", {})):
        status, body, headers = await api.request(method, path, **kwargs)
        err = assert_envelope(status, body, headers, "validation_error")
        assert "NUL" in err["details"]["fields"][0]["message"], (path, err)
    assert (await api.request("GET", "/v1/secrets/nul/meta"))[0] == 404  # nothing was written
