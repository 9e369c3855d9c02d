"""Rotation (api.md §5.2) through the gateway, in both run modes: rotation policies and their codes,
``:rotate``, the scheduler (once across two replicas), and failed rotations retried and made visible."""

from __future__ import annotations

import asyncio
import re
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.platform import Platform
from shared.context import RequestContext
from shared.contracts.events import Event
from tests.conftest import Api, initialised, own_platform, remember_secret, start_platform
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.integration.test_bus_contract import wait_until

FAST = {"rotation_min_interval": "1s", "rotation_retry_base": 0.3, "lifecycle_interval": 0.2}


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn, **FAST) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture
async def events(platform: Platform) -> list[Event]:
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await platform.bus.subscribe(name("rotation-events"), ["secret.#"], on)
    return got


async def expect(api: Api, code: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, body, headers = await api.request(method, path, **kwargs)
    return assert_envelope(status, body, headers, code)


async def rotation_policy(api: Api, pattern: str, interval: str = "30d", **generator: Any) -> dict[str, Any]:
    status, made, _ = await api.request("POST", "/v1/rotation-policies", json={
        "name": name("rp"), "path_pattern": pattern, "interval": interval,
        "generator": {"type": "password", **generator}})
    assert status == 201, made
    return dict(made)


async def put(api: Api, path: str, value: Any = None, **body: Any) -> dict[str, Any]:
    if value is None:
        value = remember_secret("initial-" + name("v"))
    status, meta, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": value, **body})
    assert status in (200, 201), meta
    return dict(meta)


async def value(api: Api, path: str) -> Any:
    status, got, _ = await api.request("GET", f"/v1/secrets/{path}")
    assert status == 200, got
    return remember_secret(got["value"]) if isinstance(got["value"], str) else got["value"], got


async def test_rotation_policy_crud_and_codes(api: Api) -> None:
    base = name("crud")
    made = await rotation_policy(api, f"{base}/**", "12h", length=40, charset="hex")
    assert made["generator"] == {"type": "password", "length": 40, "charset": "hex"}
    assert made["interval"] == "12h"
    one = f"/v1/rotation-policies/{made['name']}"
    status, got, _ = await api.request("GET", one)
    assert status == 200 and got == made
    status, listed, _ = await api.request("GET", "/v1/rotation-policies?limit=1000")
    assert status == 200 and made["name"] in [p["name"] for p in listed["items"]]
    status, replaced, _ = await api.request("PUT", one, json={"path_pattern": f"{base}/db/*", "interval": "1d",
                                                              "generator": {"type": "api_key"}})
    assert status == 200, replaced
    assert replaced["generator"] == {"type": "api_key", "length": 32, "charset": None}
    assert replaced["path_pattern"] == f"{base}/db/*" and replaced["created_at"] == made["created_at"]
    await expect(api, "name_conflict", "POST", "/v1/rotation-policies", json={
        "name": made["name"], "path_pattern": "x/**", "interval": "1d", "generator": {"type": "password"}})
    ok = {"path_pattern": "a/**", "interval": "1d", "generator": {"type": "password"}}
    await expect(api, "invalid_glob", "POST", "/v1/rotation-policies",
                 json={**ok, "name": name("rp"), "path_pattern": "a//b"})
    for interval in ("forever", "0s", "-1d", "1 d", "9" * 30):
        err = await expect(api, "invalid_duration", "POST", "/v1/rotation-policies",
                           json={**ok, "name": name("rp"), "interval": interval})
        assert err["details"]["field"] == "interval"
    for body in ({**ok, "name": "UPPER"}, {**ok, "name": "ключ"}, {**ok, "name": "a/b"},
                 {"name": name("rp"), "path_pattern": "a/**", "interval": "1d"},  # no generator
                 {**ok, "name": name("rp"), "generator": {"type": "rsa"}},
                 {**ok, "name": name("rp"), "generator": {"type": "password", "length": 8}},
                 {**ok, "name": name("rp"), "generator": {"type": "password", "length": 257}},
                 {**ok, "name": name("rp"), "generator": {"type": "password", "length": "32"}},
                 {**ok, "name": name("rp"), "generator": {"type": "password", "charset": "emoji"}},
                 {**ok, "name": name("rp"), "generator": {"type": "password", "extra": 1}},
                 {**ok, "name": name("rp"), "interval": 86400},
                 {**ok, "name": name("rp"), "path_pattern": "a" * 513}):
        await expect(api, "validation_error", "POST", "/v1/rotation-policies", json=body)
    await expect(api, "invalid_request", "POST", "/v1/rotation-policies", data=b"[1, 2]")
    await expect(api, "invalid_request", "POST", "/v1/rotation-policies",
                 data=b'{"name": "' + b"a" * 2_000_000 + b'"}')
    status, listed, _ = await api.request("GET", "/v1/rotation-policies?limit=1000")
    assert len([p for p in listed["items"] if p["path_pattern"] == "a/**"]) == 0  # nothing bad was stored
    assert (await api.request("DELETE", one))[0] == 204
    await expect(api, "rotation_policy_not_found", "GET", one)
    await expect(api, "rotation_policy_not_found", "DELETE", one)
    await expect(api, "rotation_policy_not_found", "GET", "/v1/rotation-policies/a%2Fb")
    await expect(api, "rotation_policy_not_found", "GET", "/v1/rotation-policies/%D0%BA%D0%BB")


async def test_rotate_writes_a_generated_version_from_the_longest_matching_policy(api: Api, events: list[Event]
                                                                                  ) -> None:
    base = name("rot")
    wide = await rotation_policy(api, f"{base}/**", length=16, charset="hex")
    narrow = await rotation_policy(api, f"{base}/db/*", length=48, charset="alphanumeric")
    made = await put(api, f"{base}/db/main", secret_type="password", metadata={"owner": "team-a"}, ttl="2h")
    old, _ = await value(api, f"{base}/db/main")
    status, meta, headers = await api.request("POST", f"/v1/secrets/{base}/db/main:rotate")
    assert status == 200, meta
    assert meta["version"] == made["version"] + 1 and headers["ETag"] == f'"{meta["version"]}"'
    assert meta["secret_type"] == "password" and meta["metadata"] == {"owner": "team-a"}
    assert meta["expires_at"] is not None and meta["expires_at"] > made["expires_at"]  # the same 2 h, from now
    new, got = await value(api, f"{base}/db/main")
    assert new != old and len(new) == 48 and set(new) <= set(string.ascii_letters + string.digits)
    assert "value" not in meta
    # a path only the wide policy matches gets its generator
    await put(api, f"{base}/web/key")
    status, meta, _ = await api.request("POST", f"/v1/secrets/{base}/web/key:rotate")
    assert status == 200, meta
    hexed, _ = await value(api, f"{base}/web/key")
    assert re.fullmatch("[0-9a-f]{16}", hexed)
    await wait_until(lambda: len([e for e in events if e.type == "secret.rotated"]) >= 2, timeout=15)
    rotated = sorted((e.data["path"], e.data["rotation_policy"], e.data["version"])
                     for e in events if e.type == "secret.rotated")
    assert rotated == [(f"{base}/db/main", narrow["name"], 2), (f"{base}/web/key", wide["name"], 2)]
    assert new not in repr([e.model_dump() for e in events]) and hexed not in repr([e.model_dump() for e in events])
    assert not [e for e in events if e.type == "secret.updated" and e.data["path"].startswith(base)]


async def test_rotate_codes(api: Api) -> None:
    base = name("codes")
    await put(api, f"{base}/none")
    await expect(api, "rotation_policy_not_found", "POST", f"/v1/secrets/{base}/none:rotate")
    await rotation_policy(api, f"{base}/**")
    await expect(api, "secret_not_found", "POST", f"/v1/secrets/{base}/missing:rotate")
    await put(api, f"{base}/gone")
    assert (await api.request("DELETE", f"/v1/secrets/{base}/gone"))[0] == 204
    await expect(api, "secret_not_found", "POST", f"/v1/secrets/{base}/gone:rotate")
    await put(api, f"{base}/doc", {"user": "u", "password": "p"}, secret_type="json")
    err = await expect(api, "validation_error", "POST", f"/v1/secrets/{base}/doc:rotate")
    assert err["details"]["rule"] == "secret_type"
    # a secret policy holds rotations too: 32 generated characters are short of 64
    status, sp, _ = await api.request("POST", "/v1/secret-policies", json={
        "name": name("sp"), "path_pattern": f"{base}/strict/*", "min_length": 64})
    assert status == 201
    await put(api, f"{base}/strict/k", "x" * 64)
    err = await expect(api, "validation_error", "POST", f"/v1/secrets/{base}/strict/k:rotate")
    assert err["details"] == {**err["details"], "policy": sp["name"], "rule": "min_length"}
    _, still = await value(api, f"{base}/strict/k")
    assert still["version"] == 1  # nothing written
    for bad in (f"/v1/secrets/{base}/..%2Fx:rotate", "/v1/secrets/ключ:rotate", f"/v1/secrets/{base}/none:spin"):
        status, body, headers = await api.request("POST", bad)
        assert_envelope(status, body, headers, "invalid_request" if bad.endswith(":spin") else "invalid_path")


async def test_rotate_needs_its_capability_and_stays_in_the_tenant(api: Api) -> None:
    base = name("authz")
    await rotation_policy(api, f"{base}/**")
    await put(api, f"{base}/k")
    writer = await identity(api, ["secrets:read", "secrets:write"], [allow(["secrets/**"], ["read", "write"])])
    await expect(api, "access_denied", "POST", f"/v1/secrets/{base}/k:rotate", token=writer["token"])
    reader = await identity(api, ["secrets:read"], [allow(["secrets/**"], ["read", "rotate"])])
    await expect(api, "insufficient_scope", "POST", f"/v1/secrets/{base}/k:rotate", token=reader["token"])
    rotator = await identity(api, ["secrets:write"], [allow([f"secrets/{base}/**"], ["rotate"])])
    status, meta, _ = await api.request("POST", f"/v1/secrets/{base}/k:rotate", token=rotator["token"])
    assert status == 200 and meta["version"] == 2 and meta["created_by"] is not None
    await expect(api, "insufficient_scope", "GET", "/v1/rotation-policies", token=rotator["token"])
    # another tenant: neither the policy nor the secret exists there
    status, other, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    stranger = await identity(api, ["secrets:read", "secrets:write", "admin"],
                              [allow(["**"], ["read", "list", "write", "rotate", "manage"])], tenant=other["id"])
    await expect(api, "secret_not_found", "POST", f"/v1/secrets/{base}/k:rotate", token=stranger["token"])
    status, listed, _ = await api.request("GET", "/v1/rotation-policies", token=stranger["token"])
    assert status == 200 and listed["items"] == []
    status, _, _ = await api.request("PUT", f"/v1/secrets/{base}/k", token=stranger["token"],
                                     json={"value": remember_secret("theirs-" + base)})
    assert status == 201
    await expect(api, "rotation_policy_not_found", "POST", f"/v1/secrets/{base}/k:rotate", token=stranger["token"])


async def test_the_scheduler_rotates_due_secrets_and_retries_a_failing_one(
        api: Api, platform: Platform, events: list[Event]) -> None:
    base = name("sched")
    await put(api, f"{base}/a")
    await put(api, f"{base}/doc", {"k": "v"}, secret_type="json")  # can't take a generated value
    policy = await rotation_policy(api, f"{base}/*", "2s", type="api_key")
    await wait_until(lambda: any(e.type == "secret.rotated" and e.data["path"] == f"{base}/a" for e in events),
                     timeout=20)
    fresh, meta = await value(api, f"{base}/a")
    assert meta["version"] >= 2 and len(fresh) == 32
    await wait_until(lambda: len([e for e in events if e.type == "secret.rotation_failed"
                                  and e.data["path"] == f"{base}/doc"]) >= 2, timeout=20)
    failed = [e.data for e in events if e.type == "secret.rotation_failed" and e.data["path"] == f"{base}/doc"]
    assert [f["attempt"] for f in failed[:2]] == [1, 2]
    assert failed[0]["error"] == "validation_error" and failed[0]["rotation_policy"] == policy["name"]
    assert "next_attempt_at" in failed[0]
    _, doc = await value(api, f"{base}/doc")
    assert doc["version"] == 1
    status, text, _ = await api.request("GET", "/metrics", token=None)
    assert status == 200
    metrics = text.decode() if isinstance(text, bytes) else str(text)
    assert 'coffer_secret_rotations_total{outcome="failed",trigger="schedule"}' in metrics
    # deleting the policy stops the schedule
    assert (await api.request("DELETE", f"/v1/rotation-policies/{policy['name']}"))[0] == 204
    await asyncio.sleep(0.5)
    _, before = await value(api, f"{base}/a")
    await asyncio.sleep(2.5)
    _, after = await value(api, f"{base}/a")
    assert after["version"] == before["version"]


async def test_each_due_secret_is_rotated_once_across_two_replicas(
        tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession) -> None:
    from shared.bus import InProcessBus

    bus = InProcessBus()
    await bus.start()
    first = await start_platform(tmp_path, None, pg_dsn, bus=bus, **{**FAST, "lifecycle_interval": 0.05})
    second = Platform(first.values, pg_dsn, services=("secrets",), bus=bus)
    await second.start()
    got: list[Event] = []

    async def on(event: Event, ctx: RequestContext) -> None:
        got.append(event)

    await bus.subscribe("rotation-replicas", ["secret.rotated"], on)
    try:
        api = await initialised(first, http)
        for i in range(30):
            await put(api, f"fleet/{i}")
        await rotation_policy(api, "fleet/**", "3s")
        await wait_until(lambda: len({e.data["path"] for e in got}) >= 30, timeout=30)
        # a second rotation of a path can't be due for 3 s: every rotation seen now is one per secret
        await asyncio.sleep(0.5)
        assert sorted(e.data["path"] for e in got) == sorted(f"fleet/{i}" for i in range(30))
        assert {e.data["version"] for e in got} == {2}
        for i in range(0, 30, 7):
            _, meta = await value(api, f"fleet/{i}")
            assert meta["version"] == 2
    finally:
        await second.close()
        await first.close()
        await bus.close()


async def test_a_tenant_has_at_most_100_policies_of_each_kind(api: Api) -> None:
    """Every write matches its path against all of a tenant's policies: their number is bounded."""
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    admin = await identity(api, ["admin"], [allow(["**"], ["manage", "read", "list"])], tenant=tenant["id"])
    bodies = {"rotation-policies": {"interval": "1d", "generator": {"type": "password"}},
              "secret-policies": {"require_expiry": True}}
    for kind, extra in bodies.items():
        made = await asyncio.gather(*(api.request("POST", f"/v1/{kind}", token=admin["token"], json={
            "name": f"p{i:03d}", "path_pattern": f"x{i}/**", **extra}) for i in range(100)))
        assert {m[0] for m in made} == {201}
        err = await expect(api, "quota_exceeded", "POST", f"/v1/{kind}", token=admin["token"],
                           json={"name": "one-more", "path_pattern": "y/**", **extra})
        assert err["details"] == {"quota": kind.replace("-", "_"), "limit": 100}
        await expect(api, "quota_exceeded", "PUT", f"/v1/{kind}/one-more", token=admin["token"],
                     json={"path_pattern": "y/**", **extra})
        # replacing one of the hundred is fine
        assert (await api.request("PUT", f"/v1/{kind}/p000", token=admin["token"],
                                  json={"path_pattern": "z/**", **extra}))[0] == 200
