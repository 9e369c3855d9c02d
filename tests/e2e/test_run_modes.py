"""The run modes as a user starts them: real processes, real ports.

- embedded (``make run``): one process, the in-process bus, an embedded
  PostgreSQL under the data dir (no external service at all); data survives
  a restart.
- distributed (``make run-distributed``): one process per service on
  RabbitMQ + PostgreSQL, replicas allowed, each service with its own
  RabbitMQ user and PostgreSQL role.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from yarl import URL

from shared.registry import SERVICES
from tests.conftest import ROOT, Api, free_port, rabbitmqctl
from tests.e2e.lease_targets import redis_admin
from tests.e2e.receiver import Receiver


class Proc:
    """A child process whose output is collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def stop(self, sig: int = signal.SIGINT, timeout: float = 20) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            code = await self.proc.wait()
        await asyncio.wait_for(self._reader, 5)
        return code


async def spawn(module: str, env: dict[str, str], *args: str) -> Proc:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), "COFFER_LOG_LEVEL": "warning", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    return Proc(proc)


async def wait_healthy(api: Api, proc: Proc, timeout: float = 60) -> float:
    started = time.monotonic()
    while True:
        assert proc.proc.returncode is None, f"exited early:\n{proc.output}"
        try:
            status, body, _ = await api.request("GET", "/v1/sys/health", token=None)
            if status == 200 and body["status"] == "ok":
                return time.monotonic() - started
        except aiohttp.ClientError:
            pass
        assert time.monotonic() - started < timeout, f"not healthy in {timeout}s:\n{proc.output}"
        await asyncio.sleep(0.2)


async def test_embedded_mode_needs_no_external_service_and_keeps_data(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    env = {"COFFER_DATA_DIR": str(tmp_path / "data"), "COFFER_HTTP_PORT": str(port)}
    api = Api(f"http://127.0.0.1:{port}", http)

    first = await spawn("services.embedded", env)
    try:
        cold = await wait_healthy(api, first)
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 201
    finally:
        assert await first.stop() == 0
    assert f"http://127.0.0.1:{port}/v1" in first.output and "sys/init" in first.output
    assert init["client_secret"] not in first.output and init["token"] not in first.output
    print(f"embedded cold start to healthy: {cold:.1f}s")
    assert (tmp_path / "data" / "kms.key").stat().st_mode & 0o077 == 0

    second = await spawn("services.embedded", env)
    try:
        await wait_healthy(api, second)
        status, body, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 409 and body["error"]["code"] == "name_conflict"
        status, body, _ = await api.request("GET", "/v1/auth/whoami", token=init["token"])
        assert status == 200 and body["tenant"]["id"] == init["tenant_id"]
        # the port is the second start's, while it runs: a third says so in one line, before PostgreSQL starts
        third = await spawn("services.embedded", env)
        assert await asyncio.wait_for(third.proc.wait(), 30) == 1
        await third.stop()
        assert third.lines == [f"coffer: port {port} is in use on 127.0.0.1: stop what holds it, or set "
                               "COFFER_HTTP_PORT"], third.output
    finally:
        assert await second.stop() == 0
    # the banner's first steps are for an installation that has none yet
    assert "First time" in first.output and "First time" not in second.output, second.output
    assert "Initialised" in second.output


async def test_distributed_mode_runs_each_service_as_its_own_process_and_user(
    tmp_path: Path, private_amqp: str, pg_dsn: str, http: aiohttp.ClientSession
) -> None:
    """``make run-distributed``: per-service RabbitMQ users and PostgreSQL roles, made by the launcher.

    The paths that cross services under those users: a webhook delivery (the
    dispatcher asks iam.may with its own user) and a tenant's deletion
    (tenant.deleted consumed by the secrets and webhooks users).
    """
    port = free_port()
    prefix = "d" + secrets.token_hex(3) + "_"
    env = {
        "COFFER_AMQP_URL": private_amqp, "COFFER_DATABASE_URL": pg_dsn,
        "COFFER_HTTP_PORT": str(port), "COFFER_DATA_DIR": str(tmp_path),
        "COFFER_SCHEMA_PREFIX": prefix, "COFFER_HEALTH_TIMEOUT": "1.5",
        "COFFER_OUTBOUND_ALLOWED_CIDRS": "127.0.0.0/8", "COFFER_OUTBOUND_ALLOW_HTTP": "true",
        "COFFER_WEBHOOK_POLL_INTERVAL": "0.1", "COFFER_LOG_LEVEL": "info",  # every line, to look for secrets in
        "COFFER_ENGINE_ALLOWED_CIDRS": "127.0.0.0/8", "COFFER_LEASE_SWEEP_INTERVAL": "0.2",
    }
    api = Api(f"http://127.0.0.1:{port}", http)
    receiver = await Receiver().start()
    launcher = await spawn("services.distributed", env, "--replicas", "secrets=2")
    targets = contextlib.AsyncExitStack()
    try:
        rds = await targets.enter_async_context(redis_admin())
        await wait_healthy(api, launcher)
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 201
        api.token = init["token"]
        started = [line for line in launcher.lines if line.startswith("coffer: started ")]
        assert len(started) == 6  # gateway, 2 x secrets, pki, lease, webhooks
        assert len({line.split("pid ")[1] for line in started}) == 6
        users = {f"coffer-{prefix}{s}" for s in SERVICES}
        vhost = private_amqp.rsplit("/", 1)[1]
        connected = {line.split()[0] for line in rabbitmqctl("list_connections", "user", "vhost", "--no-table-headers",
                                                               "--quiet").splitlines() if line.split()[1:] == [vhost]}
        assert connected == users  # every process as its own service's user, none as the operator's
        assert "guest" not in launcher.output and "postgres@" not in launcher.output

        status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": receiver.url})
        assert status == 201
        await api.request("POST", "/v1/subscriptions", json={"webhook_id": hook["id"], "event_types": ["secret.*"]})
        assert (await api.request("PUT", "/v1/secrets/dist/k", json={"value": "v-dist-secret-value"}))[0] == 201
        assert (await api.request("GET", "/v1/secrets/dist/k"))[1]["value"] == "v-dist-secret-value"
        deadline = time.monotonic() + 15
        while not receiver.requests:
            assert time.monotonic() < deadline, launcher.output
            await asyncio.sleep(0.1)

        status, child, _ = await api.request("POST", "/v1/tenants", json={"name": "dist-child"})
        assert status == 201
        there = {"X-Tenant-ID": child["id"]}
        assert (await api.request("PUT", "/v1/secrets/c/k", json={"value": "v"}, headers=there))[0] == 201
        # the platform's own database, broker and gateway are no tenant's targets here either (issue #27)
        own_db = str(URL(pg_dsn).with_user("postgres").with_password("any"))
        for kind, config in (("postgresql", {"connection_url": own_db}),
                             ("rabbitmq", {"management_url": "http://127.0.0.1:15672", "username": "guest",
                                           "password": "guest"})):
            status, body, _ = await api.request("POST", "/v1/engines", headers=there, json={
                "name": f"own-{kind}", "type": kind, "config": config})
            assert (status, body["error"]["code"]) == (400, "invalid_config"), body
            assert "not allowed" in body["error"]["message"], body
        status, body, _ = await api.request("POST", "/v1/webhooks", headers=there,
                                            json={"url": f"{api.url}/v1/sys/health"})
        assert (status, body["error"]["code"]) == (400, "webhook_url_invalid"), body
        # dynamic credentials under the lease service's own user: one revoked by hand, one by the tenant's end
        status, _, _ = await api.request("POST", "/v1/engines", headers=there, json={
            "name": "cache", "type": "redis", "config": rds})
        assert status == 201, launcher.output
        status, _, _ = await api.request("PUT", "/v1/engines/cache/roles/app", headers=there,
                                         json={"acl_rules": ["+ping"]})
        leases = [(await api.request("POST", "/v1/engines/cache/roles/app:credentials", headers=there, json={}))[1]
                  for _ in range(2)]
        assert all("lease_id" in lease for lease in leases), leases
        assert (await api.request("POST", f"/v1/leases/{leases[0]['lease_id']}:revoke", headers=there))[0] == 204
        assert not await redis_user_exists(leases[0]["data"]["username"])
        assert await redis_user_exists(leases[1]["data"]["username"])
        assert (await api.request("DELETE", f"/v1/tenants/{child['id']}"))[0] == 204
        admin = await asyncpg.connect(pg_dsn)
        try:
            while await admin.fetchval(f'SELECT count(*) FROM "{prefix}secrets".secrets WHERE tenant_id = $1',
                                       child["id"]):
                assert time.monotonic() < deadline + 10, launcher.output
                await asyncio.sleep(0.1)
        finally:
            await admin.close()
        while await redis_user_exists(leases[1]["data"]["username"]):  # revoked in Redis, not merely forgotten
            assert time.monotonic() < deadline + 20, launcher.output
            await asyncio.sleep(0.1)

        # the PKI under its own user: a CA, a role, a certificate; OCSP and the CRL answer without a token
        status, ca, _ = await api.request("POST", "/v1/pki/cas", json={
            "name": "dist", "common_name": "Dist CA", "key_type": "ec-p256", "ttl": "8760h"})
        assert status == 201, ca
        status, _, _ = await api.request("PUT", "/v1/pki/roles/web", json={
            "ca_id": ca["id"], "allowed_domains": ["example.com"], "allow_subdomains": True})
        status, cert, _ = await api.request("POST", "/v1/pki/roles/web:issue", json={"common_name": "a.example.com"})
        assert status == 201, cert
        leaf = x509.load_pem_x509_certificate(cert["certificate"].encode())
        issuer = x509.load_pem_x509_certificate(ca["certificate"].encode())
        ocsp_request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
        assert (await api.request("POST", f"/v1/pki/certificates/{cert['serial']}:revoke", json={}))[0] == 200
        async with http.post(f"{api.url}/v1/pki/ocsp", data=ocsp_request.public_bytes(serialization.Encoding.DER)) as r:
            assert ocsp.load_der_ocsp_response(await r.read()).certificate_status == ocsp.OCSPCertStatus.REVOKED
        async with http.get(f"{api.url}/v1/pki/cas/{ca['id']}/crl") as r:
            assert x509.load_der_x509_crl(await r.read()).get_revoked_certificate_by_serial_number(
                leaf.serial_number) is not None
        admin = await asyncpg.connect(pg_dsn)
        try:  # certificate.issued and .revoked left the pki's outbox under its own user's topic permissions
            query = f'SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*) FROM "{prefix}pki".outbox'
            while (counts := await admin.fetchrow(query))[0] or counts[1] < 2:
                assert time.monotonic() < deadline + 20, launcher.output
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

        pki_pid = int(next(line for line in started if " pki " in line).split("pid ")[1].rstrip(")"))
        os.kill(pki_pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while "exited" not in launcher.output:
            assert time.monotonic() < deadline, launcher.output
            await asyncio.sleep(0.2)
    finally:
        await launcher.stop()
        await receiver.stop()
        await targets.aclose()
        await drop_service_credentials(pg_dsn, prefix)
    assert "pki#1 exited" in launcher.output
    assert launcher.output.count("coffer: stopped ") == 6
    assert launcher.output.count('"event": "http_request"') > 5 and '"event": "webhook_attempt"' in launcher.output
    key_line = cert["private_key"].splitlines()[1]
    for secret in ("v-dist-secret-value", init["token"], init["client_secret"], hook["secret"], key_line,
                   rds["password"], *(lease["data"]["password"] for lease in leases)):
        assert secret not in launcher.output  # every process's log lines are in it


async def redis_user_exists(username: str) -> bool:
    client = aioredis.Redis(host="127.0.0.1", port=6379, decode_responses=True)
    try:
        return username in await client.execute_command("ACL", "USERS")
    finally:
        await client.aclose()


async def drop_service_credentials(pg_dsn: str, prefix: str) -> None:
    """RabbitMQ users and PostgreSQL roles are global to their servers: remove what provisioning made."""
    for service in SERVICES:
        proc = await asyncio.create_subprocess_exec("rabbitmqctl", "delete_user", f"coffer-{prefix}{service}",
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()
    admin = await asyncpg.connect(pg_dsn)
    try:
        for service in SERVICES:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{prefix}{service}" CASCADE')
            if await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", f"coffer_{prefix}{service}"):
                await admin.execute(f'DROP OWNED BY "coffer_{prefix}{service}"')
                await admin.execute(f'DROP ROLE "coffer_{prefix}{service}"')
    finally:
        await admin.close()


async def test_distributed_process_refuses_to_start_without_its_urls(tmp_path: Path) -> None:
    proc = await spawn("services.secrets", {"COFFER_DATA_DIR": str(tmp_path)})
    code = await asyncio.wait_for(proc.proc.wait(), 30)
    await proc.stop()
    assert code != 0 and "COFFER_AMQP_URL" in proc.output and "COFFER_DATABASE_URL" in proc.output

