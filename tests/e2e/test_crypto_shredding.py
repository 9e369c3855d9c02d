"""Crypto-shredding (issue #29 item 3): a deleted tenant's values don't open from a database copy taken before.

The copy is a real ``pg_dump`` of the platform's schemas, restored into a fresh database; a platform started
on it with the same data directory (the same seal and keyring directory) reads every other tenant's values
and answers ``encryption_error`` for the deleted tenant's.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from shared.registry import rpc_name
from tests.conftest import Api, initialised, remember_secret, start_platform
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_tenants import tenant


def _admin_dsn(pg_dsn: str, database: str) -> str:
    return pg_dsn.rsplit("/", 1)[0] + "/" + database


async def _dump(pg_dsn: str, schemas: list[str], out: Path) -> None:
    args = ["pg_dump", "--no-owner", "--no-privileges", "-f", str(out), *(f"--schema={s}" for s in schemas), pg_dsn]
    proc = await asyncio.create_subprocess_exec(*args, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def _restore(dsn: str, dump: Path) -> None:
    proc = await asyncio.create_subprocess_exec("psql", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(dump), dsn,
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


async def test_a_copy_taken_before_a_tenants_deletion_cant_open_its_values(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    platform = await start_platform(tmp_path, None, pg_dsn)
    prefix = platform.settings.schema_prefix
    schemas = [platform.settings.schema_for(s) for s in ("gateway", "secrets", "pki", "lease", "webhooks")]
    try:
        api = await initialised(platform, http)
        doomed, kept = await tenant(api), await tenant(api)
        values: dict[str, str] = {}
        for t in (doomed, kept):
            values[t["id"]] = remember_secret(f"shred-{t['name']}-" + secrets.token_hex(8))
            status, body, _ = await api.request("PUT", "/v1/secrets/app/db", json={"value": values[t["id"]]},
                                                headers={"X-Tenant-ID": t["id"]})
            assert status == 201, body
        status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:9999/x"},
                                            headers={"X-Tenant-ID": doomed["id"]})
        assert status == 201, hook
        remember_secret(hook["secret"])
        dump = tmp_path / "before.sql"
        await _dump(pg_dsn, schemas, dump)  # the backup, taken while the tenant still exists

        status, _, _ = await api.request("DELETE", f"/v1/tenants/{doomed['id']}")
        assert status == 204
        for name, runtime in platform.runtimes.items():
            assert runtime.keyring is not None and runtime.keyring.shredded(doomed["id"]), name
        gone_from = {name for name, runtime in platform.runtimes.items()
                     if doomed["id"] in runtime.keyring._tenants}  # noqa: SLF001 - tombstones everywhere
        assert gone_from == set(platform.runtimes)
    finally:
        await platform.close()

    database = "shred_" + secrets.token_hex(4)
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f'CREATE DATABASE "{database}"')
    try:
        restored_dsn = _admin_dsn(pg_dsn, database)
        await _restore(restored_dsn, dump)
        copy = await start_platform(tmp_path, None, restored_dsn, schema_prefix=prefix)
        try:
            assert copy.url
            api2 = Api(copy.url, http)
            api2.token = api.token
            status, body, _ = await api2.request("GET", "/v1/secrets/app/db", headers={"X-Tenant-ID": kept["id"]})
            assert status == 200 and body["value"] == values[kept["id"]]  # the other tenant reads fine
            status, body, headers = await api2.request("GET", "/v1/secrets/app/db",
                                                       headers={"X-Tenant-ID": doomed["id"]})
            assert_envelope(status, body, headers, "encryption_error")
            assert values[doomed["id"]] not in str(body)
            # and no new key is made for it: a write in the restored copy is refused too, nothing stored
            status, body, headers = await api2.request("PUT", "/v1/secrets/app/other", json={"value": "x"},
                                                       headers={"X-Tenant-ID": doomed["id"]})
            assert_envelope(status, body, headers, "encryption_error")
        finally:
            await copy.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


async def test_deleting_a_tenant_is_refused_whole_when_a_service_cant_shred(
    tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """A service that doesn't answer: 503, and the tenant is still there (its keys stay destroyed where they
    were destroyed; deleting it again finishes)."""
    platform = await start_platform(tmp_path, None, pg_dsn, rpc_timeout=0.5)
    try:
        api = await initialised(platform, http)
        t = await tenant(api)
        lease = platform.runtimes["lease"]
        handlers: Any = platform.bus._services[rpc_name("lease")]  # noqa: SLF001 - the in-process bus's methods
        method = "shred"
        saved = handlers.pop(method)
        try:
            status, body, headers = await api.request("DELETE", f"/v1/tenants/{t['id']}")
            assert_envelope(status, body, headers, "service_unavailable")
            assert (await api.request("GET", f"/v1/tenants/{t['id']}"))[0] == 200
        finally:
            handlers[method] = saved
        assert lease.keyring is not None and not lease.keyring.shredded(t["id"])
        status, _, _ = await api.request("DELETE", f"/v1/tenants/{t['id']}")
        assert status == 204
        assert lease.keyring.shredded(t["id"])
    finally:
        await platform.close()
