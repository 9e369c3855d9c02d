"""No lock-out: the root tenant keeps an admin, a partner tenant a partner admin — and when the operator
has lost every admin's credentials anyway, ``python -m services.gateway recover-admin`` makes a new one."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from services.platform import Platform
from tests.conftest import ROOT, Api, free_port, initialised, remember_secret, start_platform
from tests.e2e.iam_helpers import allow, identity, name, token
from tests.e2e.test_gateway_envelope import assert_envelope

EVERYTHING = [allow(["**"], ["read", "list", "write", "delete", "manage"])]
ALL = ["secrets:read", "secrets:write", "pki", "leases", "webhooks", "events", "admin"]


@pytest.fixture
async def fresh(tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession) -> AsyncIterator[tuple[Platform, Api]]:
    """A platform of the test's own: its root admin is the only one until the test makes another."""
    platform = await start_platform(tmp_path, None, pg_dsn, http_port=free_port())
    try:
        yield platform, await initialised(platform, http)
    finally:
        await platform.close()


async def whoami(api: Api, bearer: str | None = "default") -> dict[str, Any]:
    status, me, _ = await api.request("GET", "/v1/auth/whoami", token=bearer)
    assert status == 200, me
    return dict(me)


async def test_the_last_root_admin_can_not_be_deleted_or_lose_the_admin_scope(fresh: tuple[Platform, Api]) -> None:
    _, api = fresh
    me = (await whoami(api))["identity"]["id"]
    for method, body in (("DELETE", None), ("PATCH", {"allowed_scopes": ["secrets:read"]}),
                         ("PATCH", {"partner_admin": False})):
        status, answer, headers = await api.request(method, f"/v1/identities/{me}", json=body)
        err = assert_envelope(status, answer, headers, "forbidden")
        assert err["details"]["rule"] in ("last_root_admin", "last_partner_admin")
    assert (await whoami(api))["scopes"] == sorted(ALL)  # nothing changed
    # with a second admin, the first may go (itself included); then the second is the last
    second = await identity(api, ALL, EVERYTHING)
    assert (await api.request("PATCH", f"/v1/identities/{second['id']}", json={"partner_admin": True}))[0] == 200
    assert (await api.request("DELETE", f"/v1/identities/{me}"))[0] == 204
    status, answer, headers = await api.request("DELETE", f"/v1/identities/{second['id']}", token=second["token"])
    assert assert_envelope(status, answer, headers, "forbidden")["details"]["rule"] == "last_root_admin"


async def test_two_admins_removing_each_other_at_once_leave_one(fresh: tuple[Platform, Api]) -> None:
    _, api = fresh
    first = await identity(api, ALL, EVERYTHING)
    second = await identity(api, ALL, EVERYTHING)
    init_admin = (await whoami(api))["identity"]["id"]
    for who in (first, second):
        assert (await api.request("PATCH", f"/v1/identities/{who['id']}", json={"partner_admin": True}))[0] == 200
    assert (await api.request("DELETE", f"/v1/identities/{init_admin}"))[0] == 204
    answers = await asyncio.gather(
        api.request("DELETE", f"/v1/identities/{second['id']}", token=first["token"]),
        api.request("DELETE", f"/v1/identities/{first['id']}", token=second["token"]))
    assert sorted(a[0] for a in answers) == [204, 403]


async def test_a_partner_tenant_keeps_its_last_partner_admin(fresh: tuple[Platform, Api]) -> None:
    _, api = fresh
    status, partner, _ = await api.request("POST", "/v1/tenants", json={"name": name("p"), "kind": "partner"})
    assert status == 201
    padmin = await identity(api, ["secrets:read", "admin"], EVERYTHING, tenant=partner["id"], partner_admin=True)
    there = {"X-Tenant-ID": partner["id"]}
    for method, body in (("DELETE", None), ("PATCH", {"partner_admin": False})):
        status, answer, headers = await api.request(method, f"/v1/identities/{padmin['id']}", headers=there,
                                                    json=body)
        assert assert_envelope(status, answer, headers, "forbidden")["details"]["rule"] == "last_partner_admin"
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": name("s")})
    plain = await identity(api, ["secrets:read", "admin"], EVERYTHING, tenant=child["id"])
    assert (await api.request("DELETE", f"/v1/identities/{plain['id']}",
                              headers={"X-Tenant-ID": child["id"]}))[0] == 204  # a standard tenant: no such rule


async def recover(platform: Platform, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    values = platform.values
    full = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    full.update({"PYTHONPATH": str(ROOT), "COFFER_DATABASE_URL": str(values["database_url"]),
                 "COFFER_SCHEMA_PREFIX": values["schema_prefix"], "COFFER_DATA_DIR": str(values["data_dir"]),
                 **(env or {})})
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.gateway", "recover-admin", *args,
                                                env=full, cwd=ROOT, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_recover_admin_makes_a_root_admin_when_every_one_is_lost(fresh: tuple[Platform, Api],
                                                                       pg_dsn: str) -> None:
    platform, api = fresh
    schema = platform.values["schema_prefix"] + "gateway"
    conn = await asyncpg.connect(pg_dsn)
    try:  # every admin's credentials lost: as the database sees it, no identity can log in
        await conn.execute(f'UPDATE "{schema}".identities SET secret_hash = NULL, password_hash = NULL')
    finally:
        await conn.close()

    # without the installation's KMS key file: refused, nothing made
    code, out, err = await recover(platform, env={"COFFER_KMS_KEY_FILE": str(Path(platform.values["data_dir"])
                                                                              / "nope.key")})
    assert code != 0 and "KMS key file not found" in err and "client_secret" not in out
    other_key = Path(platform.values["data_dir"]) / "other.key"
    other_key.write_text('{"keys": {"kek_x": "' + "A" * 43 + '="}, "active": "kek_x"}')
    code, out, err = await recover(platform, env={"COFFER_KMS_KEY_FILE": str(other_key)})
    assert code != 0 and "does not open" in err

    code, out, err = await recover(platform, "--name", "break-glass")
    assert code == 0, err
    client_id = re.search(r"client_id:\s+(\S+)", out)[1]  # type: ignore[index]
    secret = remember_secret(re.search(r"client_secret:\s+(\S+)", out)[1])  # type: ignore[index]
    fresh_token = await token(api, client_id, secret)
    me = await whoami(api, fresh_token)
    assert me["identity"]["name"] == "break-glass" and me["identity"]["partner_admin"]
    assert me["scopes"] == sorted(ALL)
    assert (await api.request("PUT", "/v1/secrets/after/recovery", token=fresh_token, json={"value": "v"}))[0] == 201
    status, events, _ = await api.request("GET", "/v1/audit/events?limit=1000", token=fresh_token)
    assert status == 200
    assert any(e["action"] == "recover-admin (operator command)" for e in events["items"])
    status, verified, _ = await api.request("GET", "/v1/audit/verify", token=fresh_token)
    assert status == 200 and verified["ok"] is True and verified["checked"] > 1  # the chain holds the entry
    conn = await asyncpg.connect(pg_dsn)
    try:
        published = await conn.fetch(f"SELECT data::text AS data FROM \"{schema}\".outbox"
                                     " WHERE type = 'system.admin_recovered'")
    finally:
        await conn.close()
    assert len(published) == 1 and secret not in published[0]["data"]
    code, _, err = await recover(platform, "--name", "break-glass")  # the name is taken now
    assert code != 0 and "break-glass" in err
