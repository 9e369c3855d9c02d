"""What the running gateway does with the process's seal (services/gateway/system/seal.py): ``system.sealed`` and
``system.unsealed`` in the outbox (no key material), unseal attempts made while sealed in the root tenant's
audit log (never the share), ``sys/seal-status`` and ``sys/seal`` of an unsealed platform, and ``sys/seal``
under the ``file`` seal (nothing to seal)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import aiohttp
import asyncpg

from services.gateway.state import STATE
from services.gateway.system.seal import after_unseal
from services.platform import Platform
from shared import custody as custody_mod
from shared.config import Settings
from tests.conftest import Api, initialised, remember_secret, setting_values


async def test_events_and_audit_of_the_seal(tmp_path: Path, pg_dsn: str, http: aiohttp.ClientSession) -> None:
    custody = custody_mod.Custody(Settings(seal="shamir", data_dir=tmp_path))
    custody.start()
    shares = await custody.init_shamir(3, 2)
    for share in shares:
        remember_secret(share)
    values = setting_values(tmp_path, None, pg_dsn, seal="shamir")
    platform = Platform(values, pg_dsn, name=f"test-{secrets.token_hex(3)}", kms=custody.kms)
    await platform.start()
    custody_mod.install(custody)
    try:
        api: Api = await initialised(platform, http)
        state = platform.app[STATE]
        custody.note_attempt(outcome="invalid_request", reason="wrong_share", status=400, client_ip="127.0.0.1",
                             request_id="req_attempt1")
        custody.note_attempt(outcome="ok", reason="unsealed", status=200, client_ip="127.0.0.1",
                             request_id="req_attempt2")
        await after_unseal(state, custody)
        status, audit, _ = await api.request("GET", "/v1/audit/events?limit=1000")
        entries = [e for e in audit["items"] if e["action"].startswith("POST /v1/sys/unseal")]
        assert sorted((e["outcome"], e["request_id"]) for e in entries) == [
            ("invalid_request", "req_attempt1"), ("ok", "req_attempt2")], entries
        assert "wrong_share" in next(e["action"] for e in entries if e["request_id"] == "req_attempt1")
        assert custody.take_attempts() == ([], 0)  # written once

        status, body, _ = await api.request("GET", "/v1/sys/seal-status", token=None)
        assert (status, body["sealed"], body["type"], body["threshold"]) == (200, False, "shamir", 2), body
        status, body, _ = await api.request("POST", "/v1/sys/unseal", token=None, json={"share": shares[0]})
        assert (status, body) == (200, {"sealed": False, "progress": 0, "threshold": 2})
        status, body, _ = await api.request("POST", "/v1/sys/seal")
        assert (status, body) == (200, {"sealed": True, "type": "shamir"})
        assert custody.seal_requested.is_set()  # the process's main stops the platform and seals

        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch(f'SELECT type, tenant_id, data FROM "{state.schema}".outbox '
                                    "WHERE type LIKE 'system.%sealed' ORDER BY seq")
        finally:
            await conn.close()
        kinds = [(r["type"], r["tenant_id"]) for r in rows]
        root = (await api.request("GET", "/v1/auth/whoami"))[1]["tenant"]["id"]
        assert kinds == [("system.unsealed", root), ("system.sealed", root)], kinds
        data = [json.loads(r["data"]) if isinstance(r["data"], str) else r["data"] for r in rows]
        assert data[0]["type"] == "shamir" and data[0]["how"] == "init" and data[1]["type"] == "shamir"
        for share in shares:
            assert all(share not in json.dumps(d) for d in data)
    finally:
        custody_mod.install(None)
        await platform.close()
        await custody.close()


async def test_sys_seal_under_the_file_seal_seals_nothing(tmp_path: Path, pg_dsn: str,
                                                          http: aiohttp.ClientSession) -> None:
    platform = Platform(setting_values(tmp_path, None, pg_dsn), pg_dsn, name=f"test-{secrets.token_hex(3)}")
    await platform.start()
    try:
        api = await initialised(platform, http)
        status, body, _ = await api.request("POST", "/v1/sys/seal")
        assert status == 200 and body["sealed"] is False and body["type"] == "file", body
        status, body, _ = await api.request("GET", "/v1/sys/seal-status", token=None)
        assert body == {"sealed": False, "type": "file", "initialized": True, "progress": 0, "threshold": None}
        status, body, _ = await api.request("GET", "/v1/sys/health", token=None)
        assert status == 200, body
    finally:
        await platform.close()


async def test_the_platforms_own_init_waits_for_the_sealed_gateways(tmp_path: Path, pg_dsn: str,
                                                                    http: aiohttp.ClientSession) -> None:
    """The seal attack review: between a shamir sys/init making the seal and that init's run in-process, the
    platform already listens, and its own sys/init (no token) gave the root admin to whoever asked first (6
    of 6 races won). While the sealed gateway's init is reserved, the platform's answers 409."""
    custody = custody_mod.Custody(Settings(seal="shamir", data_dir=tmp_path))
    custody.start()
    custody.init_reserved = True  # what the sealed gateway sets before the seal opens
    for share in await custody.init_shamir(3, 2):
        remember_secret(share)
    values = setting_values(tmp_path, None, pg_dsn, seal="shamir")
    platform = Platform(values, pg_dsn, name=f"test-{secrets.token_hex(3)}", kms=custody.kms)
    await platform.start()
    custody_mod.install(custody)
    try:
        assert platform.url
        api = Api(platform.url, http)
        status, body, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert (status, body["error"]["code"]) == (409, "name_conflict"), body
        assert "being initialised" in body["error"]["message"]
        custody.init_reserved = False  # the sealed gateway's init ran (finish_init lifts it)
        status, body, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 201, body
        remember_secret(body["client_secret"])
    finally:
        custody_mod.install(None)
        await platform.close()
        await custody.close()
