"""``COFFER_SEAL=shamir`` end to end through a real ``python -m services.embedded`` (issue #29 item 1, api.md §11).

init 5/3 (the shares and the admin in one answer), a secret written, a restart: sealed answers (health
503 ``sealed``, everything else 503 ``service_unavailable`` with ``details.sealed``, the envelope and its
headers); a wrong share and a repeated one are refused without losing the progress; the third share
unseals; the secret reads back; ``sys/seal`` seals again for a root admin only; no key file anywhere in
the data directory, and no share, token or secret in the process's output.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from coffer_client import AsyncClient, CofferError

from tests.conftest import ROOT, Api, free_port
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_run_modes import Proc, spawn, wait_healthy

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
async def fresh() -> AsyncIterator[aiohttp.ClientSession]:
    """No kept-alive connections: the sealed gateway and the platform take turns on one address."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


async def wait_sealed(api: Api, proc: Proc, timeout: float = 60) -> dict[str, Any]:
    """Until health answers 503 ``sealed``: that answer."""
    started = time.monotonic()
    while True:
        assert proc.proc.returncode is None, f"exited early:\n{proc.output}"
        try:
            status, body, _ = await api.request("GET", "/v1/sys/health", token=None)
            if status == 503 and body.get("status") == "sealed":
                return dict(body)
        except aiohttp.ClientError:
            pass
        assert time.monotonic() - started < timeout, f"not sealed in {timeout}s:\n{proc.output}"
        await asyncio.sleep(0.2)


def assert_sealed_answer(status: int, body: Any, headers: Any, *, request_id: str | None = None) -> None:
    err = assert_envelope(status, body, headers, "service_unavailable")
    assert err["details"]["sealed"] is True and err["details"]["type"] == "shamir", err
    assert headers["Cache-Control"] == "no-store" and all(h in headers for h in RATE_HEADERS), headers
    if request_id:
        assert headers["X-Request-ID"] == request_id
    else:
        assert headers["X-Request-ID"].startswith("req_")


async def identity_token(api: Api, scopes: list[str], tenant: str | None = None) -> str:
    """A service identity's token (its secret stays in this test: the subprocess's output is checked for it)."""
    headers = {"X-Tenant-ID": tenant} if tenant else {}
    status, body, _ = await api.request("POST", "/v1/identities", headers=headers, json={
        "name": f"svc-{len(scopes)}-{tenant or 'root'}"[:60].replace("_", "-"), "kind": "service",
        "allowed_scopes": scopes})
    assert status == 201, body
    status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                       json={"client_id": body["client_id"], "client_secret": body["client_secret"]})
    assert status == 200, tok
    return str(tok["access_token"])


def wrong_share(share: str) -> str:
    """A share of the right split and index whose value is not the one made (one byte changed)."""
    raw = bytearray(base64.b64decode(share))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


async def test_shamir_init_restart_unseal_and_seal_again(tmp_path: Path, fresh: aiohttp.ClientSession) -> None:
    port, data = free_port(), tmp_path / "data"
    env = {"COFFER_DATA_DIR": str(data), "COFFER_HTTP_PORT": str(port), "COFFER_SEAL": "shamir",
           "COFFER_LOG_LEVEL": "info"}
    api = Api(f"http://127.0.0.1:{port}", fresh)
    outputs: list[str] = []

    first = await spawn("services.embedded", env)
    try:
        health = await wait_sealed(api, first)
        assert health["sealed"] is True and health["reason"] == "not_initialised", health
        status, body, _ = await api.request("GET", "/v1/sys/seal-status", token=None)
        assert (status, body["initialized"], body["sealed"]) == (200, False, True), body
        status, body, _ = await api.request("POST", "/v1/sys/init", token=None,
                                            json={"secret_shares": 5, "secret_threshold": 6})
        assert status == 422, body  # threshold above shares: nothing made
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None,
                                            json={"secret_shares": 5, "secret_threshold": 3})
        assert status == 201, init
        shares = init["unseal_shares"]
        assert len(shares) == 5 and len(set(shares)) == 5
        assert {"tenant_id", "client_id", "client_secret", "token"} <= set(init)
        await wait_healthy(api, first)
        api.token = init["token"]
        status, _, _ = await api.request("PUT", "/v1/secrets/app/db", json={"value": "v-shamir-secret-value"})
        assert status == 201
        status, body, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert (status, body["error"]["code"]) == (409, "name_conflict")
        status, body, _ = await api.request("GET", "/v1/sys/seal-status", token=None)
        assert (status, body["sealed"], body["type"], body["threshold"]) == (200, False, "shamir", 3), body
    finally:
        assert await first.stop() == 0
        outputs.append(first.output)

    second = await spawn("services.embedded", env)
    try:
        health = await wait_sealed(api, second)
        assert health == {**health, "status": "sealed", "sealed": True, "type": "shamir", "reason": "awaiting_shares"}
        assert health["error"]["code"] == "service_unavailable" and health["error"]["details"]["sealed"] is True
        # every other call: the envelope, its headers, the caller's request id echoed
        for method, path in (("GET", "/v1/secrets/app/db"), ("PUT", "/v1/secrets/app/db"), ("GET", "/metrics"),
                             ("GET", "/v1/nope"), ("POST", "/v1/auth/token"), ("GET", "/v1/sys/unseal")):
            status, body, headers = await api.request(method, path, headers={"X-Request-ID": "sealed-check-1"},
                                                      json={} if method != "GET" else None)
            assert_sealed_answer(status, body, headers, request_id="sealed-check-1")
        status, body, headers = await api.request("GET", "/v1/secrets/app/db", headers={"X-Request-ID": "bad id!"})
        assert_sealed_answer(status, body, headers)
        status, body, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert (status, body["error"]["code"]) == (409, "name_conflict")

        async def unseal(share: str) -> tuple[int, Any]:
            status, body, headers = await api.request("POST", "/v1/sys/unseal", token=None, json={"share": share})
            assert all(h in headers for h in RATE_HEADERS) and headers["Cache-Control"] == "no-store"
            return status, body

        assert await unseal(shares[0]) == (200, {"sealed": True, "progress": 1, "threshold": 3})
        status, body = await unseal(wrong_share(shares[1]))
        assert status == 400 and body["error"]["code"] == "invalid_request", body
        assert body["error"]["details"] == {"reason": "wrong_share", "progress": 1, "threshold": 3}
        status, body = await unseal(shares[0])
        assert status == 400 and body["error"]["details"]["reason"] == "repeated_share", body
        status, body = await unseal("not a share")
        assert status == 400 and body["error"]["details"]["reason"] == "malformed_share", body
        status, body = await unseal("A" * 129)
        assert status == 422, body  # bounded
        status, body, _ = await api.request("GET", "/v1/sys/seal-status", token=None)
        assert (body["sealed"], body["progress"], body["threshold"]) == (True, 1, 3), body  # nothing reset
        assert await unseal(shares[3]) == (200, {"sealed": True, "progress": 2, "threshold": 3})
        assert await unseal(shares[4]) == (200, {"sealed": False, "progress": 0, "threshold": 3})
        await wait_healthy(api, second)
        status, body, _ = await api.request("GET", "/v1/secrets/app/db")
        assert status == 200 and body["value"] == "v-shamir-secret-value", body

        # the attempts made while sealed are in the root tenant's audit log (never the share)
        deadline = time.monotonic() + 15  # written just after the platform starts answering
        while True:
            status, audit, _ = await api.request("GET", "/v1/audit/events?limit=1000")
            assert status == 200, audit
            attempts = [e for e in audit["items"] if e["action"].startswith("POST /v1/sys/unseal")]
            if len(attempts) >= 6 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert len(attempts) == 6, attempts  # 3 accepted, wrong, repeated, malformed (the 422 never reached it)
        assert sorted(e["outcome"] for e in attempts) == ["invalid_request"] * 3 + ["ok"] * 3
        assert any("wrong_share" in e["action"] for e in attempts)

        # sys/seal: root admins only
        reader = await identity_token(api, ["secrets:read"])
        status, body, _ = await api.request("POST", "/v1/sys/seal", token=reader)
        assert (status, body["error"]["code"]) == (403, "insufficient_scope"), body
        status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": "seal-child"})
        assert status == 201, tenant
        child_admin = await identity_token(api, ["admin"], tenant=tenant["id"])
        status, body, _ = await api.request("POST", "/v1/sys/seal", token=child_admin)
        assert (status, body["error"]["code"]) == (403, "forbidden"), body  # an admin, not the root tenant's
        status, body, _ = await api.request("POST", "/v1/sys/seal")
        assert (status, body) == (200, {"sealed": True, "type": "shamir"}), body
        await wait_sealed(api, second, timeout=30)
        status, body, headers = await api.request("GET", "/v1/secrets/app/db")
        assert_sealed_answer(status, body, headers)
        for share in shares[2:5]:
            status, body = await unseal(share)
            assert status == 200, body
        await wait_healthy(api, second)
        status, body, _ = await api.request("GET", "/v1/secrets/app/db")
        assert status == 200 and body["value"] == "v-shamir-secret-value", body
    finally:
        assert await second.stop() == 0
        outputs.append(second.output)

    output = "\n".join(outputs)
    assert "SEALED (shamir)" in output and "/v1/sys/unseal" in output, output
    assert "v-shamir-secret-value" not in output and init["token"] not in output
    assert init["client_secret"] not in output
    for share in shares:
        assert share not in output and share[:20] not in output
    assert list(data.rglob("kms.key")) == [] and (data / "keyring.sealed").exists()
    assert (data / "keyring.sealed").stat().st_mode & 0o077 == 0
    text = (data / "keyring.sealed").read_text()
    assert all(share not in text for share in shares)


async def test_a_file_installation_moves_to_shamir_with_the_migrate_command(
        tmp_path: Path, fresh: aiohttp.ClientSession) -> None:
    """The documented path: a `file` installation with a secret; a shamir start refused while kms.key is there
    (naming the command); `python -m shared.seal migrate --to shamir`; a shamir start, three shares, the secret."""
    port, data = free_port(), tmp_path / "data"
    env = {"COFFER_DATA_DIR": str(data), "COFFER_HTTP_PORT": str(port)}
    api = Api(f"http://127.0.0.1:{port}", fresh)
    before = await spawn("services.embedded", env)
    try:
        await wait_healthy(api, before)
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 201
        api.token = init["token"]
        assert (await api.request("PUT", "/v1/secrets/m/k", json={"value": "v-migrated-value"}))[0] == 201
    finally:
        assert await before.stop() == 0

    refused = await spawn("services.embedded", {**env, "COFFER_SEAL": "shamir"})
    assert await asyncio.wait_for(refused.proc.wait(), 30) != 0
    await refused.stop()
    assert "python -m shared.seal migrate --to shamir" in refused.output and "Traceback" not in refused.output

    migrate = await spawn("shared.seal", env, "migrate", "--to", "shamir", "--shares", "3", "--threshold", "2")
    assert await asyncio.wait_for(migrate.proc.wait(), 60) == 0, migrate.output
    await migrate.stop()
    shares = [line for line in migrate.lines if re.fullmatch(r"[A-Za-z0-9+/=]{52}", line)]
    assert len(shares) == 3, migrate.output
    assert list(data.rglob("kms.key")) == []

    after = await spawn("services.embedded", {**env, "COFFER_SEAL": "shamir"})
    try:
        await wait_sealed(api, after)
        async with AsyncClient(api.url, token="") as client:  # the Python client's seal calls, no token
            assert (await client.seal_status())["sealed"] is True
            assert await client.unseal(shares[0]) == {"sealed": True, "progress": 1, "threshold": 2}
            with pytest.raises(CofferError) as refused:
                await client.unseal(shares[0])
            assert refused.value.code == "invalid_request" and shares[0] not in str(refused.value)
            assert (await client.unseal(shares[1]))["sealed"] is False
        await wait_healthy(api, after)
        status, body, _ = await api.request("GET", "/v1/secrets/m/k")
        assert status == 200 and body["value"] == "v-migrated-value", body
    finally:
        assert await after.stop() == 0
    assert all(share not in after.output for share in shares) and "v-migrated-value" not in after.output

    # break-glass under the seal: recover-admin opens the keys with shares on stdin, not a key file
    base = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    recover = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway", "recover-admin", "--name", "rescue", cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **env, "COFFER_SEAL": "shamir"}, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(recover.communicate(("garbage\n" + "\n".join(shares[1:]) + "\n").encode()), 90)
    assert recover.returncode == 0, err.decode()
    said = re.search(r"client_id:\s+(\S+)\s+client_secret:\s+(\S+)", out.decode())
    assert said, out.decode()
    client_id, client_secret = said.groups()
    assert "share refused" in err.decode() and all(share not in out.decode() + err.decode() for share in shares)
    assert list(data.rglob("kms.key")) == []
    again = await spawn("services.embedded", {**env, "COFFER_SEAL": "shamir"})
    try:
        await wait_sealed(api, again)
        for share in shares[:2]:
            assert (await api.request("POST", "/v1/sys/unseal", token=None, json={"share": share}))[0] == 200
        await wait_healthy(api, again)
        status, tok, _ = await api.request("POST", "/v1/auth/token", token=None,
                                           json={"client_id": client_id, "client_secret": client_secret})
        assert status == 200, tok
    finally:
        assert await again.stop() == 0


async def test_rotate_root_new_shares_open_and_old_ones_no_longer(tmp_path: Path, fresh: aiohttp.ClientSession) -> None:
    """``sys/rotate-root`` (root admins): new shares once; after a restart the old ones are refused, the new
    ones unseal, and every value reads back (the service keyrings were not touched)."""
    port, data = free_port(), tmp_path / "data"
    env = {"COFFER_DATA_DIR": str(data), "COFFER_HTTP_PORT": str(port), "COFFER_SEAL": "shamir"}
    api = Api(f"http://127.0.0.1:{port}", fresh)
    first = await spawn("services.embedded", env)
    try:
        await wait_sealed(api, first)
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None,
                                            json={"secret_shares": 3, "secret_threshold": 2})
        assert status == 201, init
        old = init["unseal_shares"]
        await wait_healthy(api, first)
        api.token = init["token"]
        assert (await api.request("PUT", "/v1/secrets/app/db", json={"value": "v-before-rotate-root"}))[0] == 201
        keyrings = {p.name: p.read_bytes() for p in (data / "keyrings").glob("*.keyring")}
        before = (data / "keyring.sealed").read_bytes()
        reader = await identity_token(api, ["secrets:read"])
        status, body, _ = await api.request("POST", "/v1/sys/rotate-root", token=reader)
        assert (status, body["error"]["code"]) == (403, "insufficient_scope"), body
        for bad in ({"secret_shares": "5"}, {"secret_shares": 17}, {"secret_shares": 2, "secret_threshold": 3},
                    {"unknown": 1}):
            status, body, _ = await api.request("POST", "/v1/sys/rotate-root", json=bad)
            assert status in (400, 422) and body["error"]["code"] in ("validation_error", "invalid_request"), bad
        assert (data / "keyring.sealed").read_bytes() == before  # nothing changed by refused calls
        status, body, _ = await api.request("POST", "/v1/sys/rotate-root",
                                            json={"secret_shares": 4, "secret_threshold": 2})
        assert status == 200, body
        new = body["unseal_shares"]
        assert (body["type"], body["rotated"], body["secret_shares"], body["secret_threshold"], len(new)) == \
            ("shamir", True, 4, 2, 4)
        assert not set(new) & set(old) and (data / "keyring.sealed").read_bytes() != before
        assert {p.name: p.read_bytes() for p in (data / "keyrings").glob("*.keyring")} == keyrings
        assert (await api.request("GET", "/v1/secrets/app/db"))[1]["value"] == "v-before-rotate-root"
    finally:
        assert await first.stop() == 0
    second = await spawn("services.embedded", env)
    try:
        await wait_sealed(api, second)
        status, body, _ = await api.request("POST", "/v1/sys/unseal", token=None, json={"share": old[0]})
        assert status == 400 and body["error"]["details"]["reason"] in ("wrong_split", "wrong_share"), body
        for share in new[2:]:
            status, body, _ = await api.request("POST", "/v1/sys/unseal", token=None, json={"share": share})
            assert status == 200, body
        await wait_healthy(api, second)
        assert (await api.request("GET", "/v1/secrets/app/db"))[1]["value"] == "v-before-rotate-root"
    finally:
        assert await second.stop() == 0
    output = first.output + second.output
    assert all(s not in output for s in (*old, *new)) and "v-before-rotate-root" not in output
