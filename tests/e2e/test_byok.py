"""Tenants that hold their own key (issue #29 item 4, api.md §11) on moto's KMS, through the gateway.

A tenant created with ``kms_key`` has its KEK wrapped by that key in every service's keyring; disabling the
key stops its reads (``encryption_error``) within the check interval, enabling it brings them back, and no
other tenant notices. Only the partner above a tenant sets it; a key the KMS refuses is ``invalid_config``
and nothing is made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.platform import Platform
from shared.registry import rpc_name
from tests.conftest import Api, initialised, remember_secret, start_platform
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.integration.test_seal_awskms import REGION, aws_credentials, kms_call, moto  # noqa: F401 - fixtures

CHECK = 1.0  # COFFER_BYOK_CHECK_INTERVAL here (20 s by default)


@pytest.fixture
async def byok_platform(tmp_path: Path, pg_dsn: str, moto: str) -> AsyncIterator[Platform]:  # noqa: F811
    platform = await start_platform(tmp_path, None, pg_dsn, awskms_endpoint_url=moto, awskms_region=REGION,
                                    byok_check_interval=CHECK, byok_ttl=5.0, rpc_timeout=10.0)
    yield platform
    await platform.close()


async def new_key(moto: str) -> str:  # noqa: F811
    answer: Any = await kms_call(moto, "create_key", Description="a tenant's own key", KeyUsage="ENCRYPT_DECRYPT")
    return str(answer["KeyMetadata"]["KeyId"])


async def read(api: Api, tenant: str) -> tuple[int, Any, Any]:
    return await api.request("GET", "/v1/secrets/app/db", headers={"X-Tenant-ID": tenant})


async def until(check: Any, timeout: float = 10.0) -> float:
    """Seconds until ``check()`` is true (awaited), failing after ``timeout``."""
    began = time.monotonic()
    while not await check():
        assert time.monotonic() - began < timeout, "not within the timeout"
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def test_a_tenant_with_its_own_key_stops_and_resumes_with_it(
        byok_platform: Platform, http: aiohttp.ClientSession, moto: str) -> None:  # noqa: F811
    api = await initialised(byok_platform, http)
    key_id = await new_key(moto)
    status, own, _ = await api.request("POST", "/v1/tenants", json={
        "name": name("byok"), "kms_key": {"type": "awskms", "key_id": key_id}})
    assert status == 201 and own["kms_key"]["key_id"] == key_id and own["kms_key"]["arn"].endswith(key_id), own
    status, other, _ = await api.request("POST", "/v1/tenants", json={"name": name("plain")})
    assert status == 201 and other["kms_key"] is None
    values = {t["id"]: remember_secret(f"byok-{t['id']}") for t in (own, other)}
    for tenant, value in values.items():
        status, body, _ = await api.request("PUT", "/v1/secrets/app/db", json={"value": value},
                                            headers={"X-Tenant-ID": tenant})
        assert status == 201, body
    for runtime in byok_platform.runtimes.values():  # every service's KEK of the tenant is wrapped by its key
        assert runtime.keyring is not None and runtime.keyring._tenants[own["id"]].kms == {  # noqa: SLF001
            "type": "awskms", "key_id": own["kms_key"]["arn"]}

    await kms_call(moto, "disable_key", KeyId=key_id)

    async def refused() -> bool:
        status, body, headers = await read(api, own["id"])
        if status != 500:
            return False
        err = assert_envelope(status, body, headers, "encryption_error")
        return err["details"].get("reason") == "kms_unavailable" and values[own["id"]] not in str(body)

    took = await until(refused, timeout=15 * CHECK)  # the next check (each process asks every CHECK seconds)
    print(f"BYOK: reads refused {took:.2f} s after the key was disabled (checks every {CHECK} s)")
    status, body, _ = await read(api, other["id"])  # the other tenant never notices
    assert status == 200 and body["value"] == values[other["id"]]
    status, body, headers = await api.request("PUT", "/v1/secrets/app/new", json={"value": "x"},
                                              headers={"X-Tenant-ID": own["id"]})
    assert_envelope(status, body, headers, "encryption_error")  # nor is anything written under it

    await kms_call(moto, "enable_key", KeyId=key_id)

    async def readable() -> bool:
        status, body, _ = await read(api, own["id"])
        return status == 200 and body["value"] == values[own["id"]]

    await until(readable, timeout=15 * CHECK)

    # the partner takes the tenant back from its key: it no longer depends on the KMS
    status, patched, _ = await api.request("PATCH", f"/v1/tenants/{own['id']}", json={"kms_key": None})
    assert status == 200 and patched["kms_key"] is None, patched
    await kms_call(moto, "disable_key", KeyId=key_id)
    await asyncio.sleep(3 * CHECK)
    assert await readable()
    # and gives it one again (another key): existing values still open
    second = await new_key(moto)
    status, patched, _ = await api.request("PATCH", f"/v1/tenants/{own['id']}",
                                           json={"kms_key": {"type": "awskms", "key_id": second}})
    assert status == 200 and patched["kms_key"]["key_id"] == second, patched
    assert await readable()


async def test_only_the_partner_above_sets_a_key_and_a_refused_key_makes_nothing(
        byok_platform: Platform, http: aiohttp.ClientSession, moto: str) -> None:  # noqa: F811
    api = await initialised(byok_platform, http)
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    assert status == 201
    admin = await identity(api, ["admin"], [allow(["**"], ["read", "write", "manage"])], tenant=tenant["id"])
    key_id = await new_key(moto)
    status, body, headers = await api.request("PATCH", f"/v1/tenants/{tenant['id']}", token=admin["token"],
                                              json={"kms_key": {"type": "awskms", "key_id": key_id}})
    err = assert_envelope(status, body, headers, "forbidden")
    assert err["details"]["fields"] == ["kms_key"]

    for bad in ({"type": "gcpkms", "key_id": key_id}, {"type": "awskms"}, {"type": "awskms", "key_id": ""},
                {"type": "awskms", "key_id": "a b"}, {"type": "awskms", "key_id": "k" * 3000},
                {"type": "awskms", "key_id": 7}, "awskms", ["awskms"]):
        status, body, headers = await api.request("POST", "/v1/tenants", json={"name": name("bad"), "kms_key": bad})
        assert status in (400, 422) and body["error"]["code"] in ("validation_error", "invalid_request"), bad

    # every refusal reads the same: a key that doesn't exist, one disabled, one another tenant holds
    missing = "11111111-2222-3333-4444-555555555555"
    tenant_name = name("refused")
    status, body, headers = await api.request("POST", "/v1/tenants", json={
        "name": tenant_name, "kms_key": {"type": "awskms", "key_id": missing}})
    refused = assert_envelope(status, body, headers, "invalid_config")
    assert refused["details"] == {"field": "kms_key"}, refused
    status, listed, _ = await api.request("GET", "/v1/tenants?limit=1000")
    assert tenant_name not in {t["name"] for t in listed["items"]}  # nothing made
    made = {t["id"] for t in listed["items"]}
    for runtime in byok_platform.runtimes.values():  # and no keyring keeps keys of a tenant never made
        assert runtime.keyring is not None
        assert not {t for t, e in runtime.keyring._tenants.items() if e is not None} - made  # noqa: SLF001

    await kms_call(moto, "disable_key", KeyId=key_id)
    status, body, headers = await api.request("PATCH", f"/v1/tenants/{tenant['id']}",
                                              json={"kms_key": {"type": "awskms", "key_id": key_id}})
    again = assert_envelope(status, body, headers, "invalid_config")  # a disabled key: nothing changed
    assert (again["message"], again["details"]) == (refused["message"], refused["details"])
    assert (await api.request("GET", f"/v1/tenants/{tenant['id']}"))[1]["kms_key"] is None

    # a partner can't bind its child to a key a tenant outside its reach holds
    await kms_call(moto, "enable_key", KeyId=key_id)
    status, victim, _ = await api.request("POST", "/v1/tenants", json={
        "name": name("victim"), "kms_key": {"type": "awskms", "key_id": key_id}})
    assert status == 201, victim
    status, partner, _ = await api.request("POST", "/v1/tenants", json={"name": name("p"), "kind": "partner"})
    assert status == 201
    p_admin = await identity(api, ["admin"], [allow(["**"], ["read", "write", "manage", "list"])],
                             tenant=partner["id"], partner_admin=True)
    status, body, headers = await api.request("POST", "/v1/tenants", token=p_admin["token"], json={
        "name": name("thief"), "kms_key": {"type": "awskms", "key_id": key_id}})
    err = assert_envelope(status, body, headers, "invalid_config")
    assert err["details"] == refused["details"] and err["message"] == refused["message"]


async def test_a_key_change_a_service_refuses_is_undone_everywhere(
        byok_platform: Platform, http: aiohttp.ClientSession, moto: str) -> None:  # noqa: F811
    """The tenant's row and every keyring agree: one service refusing the new key undoes the others."""
    api = await initialised(byok_platform, http)
    first, second = await new_key(moto), await new_key(moto)
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={
        "name": name("undo"), "kms_key": {"type": "awskms", "key_id": first}})
    assert status == 201, tenant
    handlers: Any = byok_platform.bus._services[rpc_name("webhooks")]  # noqa: SLF001 - the in-process bus
    saved = handlers.pop("tenant_kms")
    try:
        status, body, headers = await api.request("PATCH", f"/v1/tenants/{tenant['id']}",
                                                  json={"kms_key": {"type": "awskms", "key_id": second}})
        assert_envelope(status, body, headers, "invalid_config")
    finally:
        handlers["tenant_kms"] = saved
    assert (await api.request("GET", f"/v1/tenants/{tenant['id']}"))[1]["kms_key"]["key_id"] == first
    for service, runtime in byok_platform.runtimes.items():
        assert runtime.keyring is not None
        assert runtime.keyring._tenants[tenant["id"]].kms["key_id"] == tenant["kms_key"]["arn"], service  # noqa: SLF001
