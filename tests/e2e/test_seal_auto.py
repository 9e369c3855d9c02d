"""Auto seals through real processes (issue #29 item 1): ``awskms`` on moto's server, ``pkcs11`` on SoftHSM2.

Each: a first start makes the sealed keyring and unseals by itself; a restart unseals by itself again; with
the KMS or HSM away at start the process answers sealed (health names the reason) and unseals by itself
once it is back. Distributed mode: with ``shamir`` the gateway hands each process its own key; with
``awskms`` every process unseals its own copy by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Api, free_port, start_moto
from tests.e2e.test_run_modes import Proc, drop_service_credentials, spawn, wait_healthy
from tests.e2e.test_seal_shamir import wait_sealed
from tests.integration.test_seal_awskms import REGION, aws_credentials, kms_call  # noqa: F401 - autouse
from tests.integration.test_seal_pkcs11 import LIBRARY, PIN, hsm  # noqa: F401 - the fixture

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
UNSEALED = re.compile(r"unsealed \((awskms|pkcs11), auto\) in (\d+) ms \(the attempt that opened it: (\d+) ms\)")


class Proxy:
    """A TCP forwarder to ``target``: stopping it makes the KMS 'away' without losing moto's keys."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


@pytest.fixture
async def fresh() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    port = free_port()
    proc = start_moto(port)
    yield port
    proc.terminate()
    proc.wait(10)


async def new_key(moto_port: int) -> str:
    answer = await kms_call(f"http://127.0.0.1:{moto_port}", "create_key", Description="coffer e2e",
                            KeyUsage="ENCRYPT_DECRYPT")
    return str(answer["KeyMetadata"]["KeyId"])  # type: ignore[index]


def key_files(data: Path) -> list[Path]:
    """Every clear key file anywhere under the data directory (there must be none)."""
    return list(data.rglob("kms.key"))


def unseal_ms(output: str) -> list[tuple[int, int]]:
    """(since the process began to unseal, the attempt that opened it) per start, in ms."""
    return [(int(m[2]), int(m[3])) for m in UNSEALED.finditer(output)]


async def until(proc: Proc, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in proc.output:
        assert time.monotonic() < deadline and proc.proc.returncode is None, proc.output
        await asyncio.sleep(0.1)


async def auto_seal_round(api: Api, env: dict[str, str], data: Path, away: Any,
                          back: Any) -> tuple[str, list[tuple[int, int]]]:
    """start (keyring made, unsealed), init + write, restart (unsealed), restart with the seal away
    (sealed, the reason in health), back (unsealed by itself), the secret reads back. Every output."""
    outputs: list[str] = []
    first = await spawn("services.embedded", env)
    try:
        await wait_healthy(api, first)
        assert (data / "keyring.sealed").exists() and key_files(data) == []
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 201 and "unseal_shares" not in init, init
        api.token = init["token"]
        assert (await api.request("PUT", "/v1/secrets/auto/k", json={"value": "v-auto-seal-value"}))[0] == 201
        status, body, _ = await api.request("GET", "/v1/sys/seal-status", token=None)
        assert (body["sealed"], body["threshold"]) == (False, None), body
    finally:
        assert await first.stop() == 0
        outputs.append(first.output)
    second = await spawn("services.embedded", env)
    try:
        await wait_healthy(api, second)
        assert (await api.request("GET", "/v1/secrets/auto/k"))[1]["value"] == "v-auto-seal-value"
    finally:
        assert await second.stop() == 0
        outputs.append(second.output)
    await away()
    third = await spawn("services.embedded", env)
    try:
        health = await wait_sealed(api, third)
        while health["reason"] == "unsealing":  # the first attempt is under way
            await asyncio.sleep(0.2)
            health = await wait_sealed(api, third)
        assert health["reason"] in ("kms_unreachable", "kms_unavailable", "hsm_unavailable"), health
        assert health["message"] and health["error"]["details"]["sealed"] is True, health
        for configured in (env.get("COFFER_PKCS11_LIBRARY"), env.get("COFFER_PKCS11_TOKEN"),
                           env.get("COFFER_AWSKMS_KEY_ID"), env.get("COFFER_AWSKMS_ENDPOINT_URL")):
            assert not configured or configured not in str(health), health  # anonymous: reason codes only
        status, body, _ = await api.request("GET", "/v1/secrets/auto/k")
        assert status == 503 and body["error"]["details"]["sealed"] is True, body
        status, body, _ = await api.request("POST", "/v1/sys/unseal", token=None, json={"share": "AAAA"})
        assert status == 400 and body["error"]["details"]["reason"] == "auto_seal", body
        await until(third, '"event": "sealed"')
        await asyncio.sleep(1.5)  # a retry or two while away
        await back()
        back_at = time.monotonic()
        await wait_healthy(api, third, timeout=60)
        print(f"unsealed {time.monotonic() - back_at:.1f}s after the seal came back")
        assert (await api.request("GET", "/v1/secrets/auto/k"))[1]["value"] == "v-auto-seal-value"
        # sealed again by a root admin: an auto seal stays sealed until the process restarts
        status, body, _ = await api.request("POST", "/v1/sys/seal")
        assert (status, body) == (200, {"sealed": True, "type": env["COFFER_SEAL"]}), body
        health = await wait_sealed(api, third, timeout=30)
        assert health["reason"] == "sealed_by_operator", health
        await asyncio.sleep(2)
        assert (await wait_sealed(api, third))["reason"] == "sealed_by_operator"
    finally:
        assert await third.stop() == 0
        outputs.append(third.output)
    assert "stays sealed until the process is restarted" in third.output, third.output  # the banner says so
    output = "\n".join(outputs)
    assert "v-auto-seal-value" not in output and init["token"] not in output and init["client_secret"] not in output
    assert key_files(data) == []
    return output, unseal_ms(output)


async def test_awskms_auto_unseals_and_waits_for_the_kms(tmp_path: Path, moto_port: int,
                                                         fresh: aiohttp.ClientSession) -> None:
    key_id = await new_key(moto_port)
    proxy = Proxy(moto_port)
    await proxy.start()
    port, data = free_port(), tmp_path / "data"
    env = {**AWS_ENV, "COFFER_DATA_DIR": str(data), "COFFER_HTTP_PORT": str(port), "COFFER_SEAL": "awskms",
           "COFFER_AWSKMS_KEY_ID": key_id, "COFFER_AWSKMS_REGION": REGION, "COFFER_AWSKMS_ENDPOINT_URL": proxy.url}
    try:
        output, times = await auto_seal_round(Api(f"http://127.0.0.1:{port}", fresh), env, data, proxy.stop,
                                              proxy.start)
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()
    assert '"reason": "kms_unreachable"' in output, output
    print(f"awskms embedded auto-unseal (ms since start, ms of the attempt; per start): {times}")
    assert len(times) == 3 and all(attempt < 1000 for _, attempt in times[:2]), times  # the third met the outage


async def test_pkcs11_auto_unseals_and_waits_for_the_hsm(hsm: Path, tmp_path: Path,  # noqa: F811
                                                         fresh: aiohttp.ClientSession) -> None:
    port, data = free_port(), tmp_path / "data"
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    env = {"COFFER_DATA_DIR": str(data), "COFFER_HTTP_PORT": str(port), "COFFER_SEAL": "pkcs11",
           "COFFER_PKCS11_LIBRARY": LIBRARY, "COFFER_PKCS11_TOKEN": "coffer", "COFFER_PKCS11_KEY": "coffer-e2e",
           "COFFER_PKCS11_PIN_FILE": str(pin_file)}
    token = next(d for d in (hsm / "tokens").iterdir() if b"coffer" in (d / "token.object").read_bytes()
                 and b"spare" not in (d / "token.object").read_bytes())
    unplugged = hsm / "unplugged-e2e"

    async def away() -> None:
        shutil.move(token, unplugged)

    async def back() -> None:
        shutil.move(unplugged, token)

    try:
        output, times = await auto_seal_round(Api(f"http://127.0.0.1:{port}", fresh), env, data, away, back)
    finally:
        if unplugged.exists():
            shutil.move(unplugged, token)
    assert '"reason": "hsm_unavailable"' in output, output
    assert PIN not in output
    print(f"pkcs11 embedded auto-unseal (ms since start, ms of the attempt; per start): {times}")
    assert len(times) == 3 and all(attempt < 1000 for _, attempt in times[:2]), times  # the third met the outage


async def test_distributed_shamir_the_gateway_hands_each_process_its_own_key(
        tmp_path: Path, private_amqp: str, pg_dsn: str, fresh: aiohttp.ClientSession) -> None:
    """shamir in distributed mode: the gateway gathers the shares and hands each other process its own share
    of the root keyring (HPKE over the bus, a method only that service's RabbitMQ user may call); every
    process opens its own keyring file and no other."""
    port = free_port()
    prefix = re.sub(r"[^a-z0-9_]", "", "h" + tmp_path.name[-6:].lower().replace("-", "_") + "_")[:12]
    env = {"COFFER_AMQP_URL": private_amqp, "COFFER_DATABASE_URL": pg_dsn, "COFFER_HTTP_PORT": str(port),
           "COFFER_DATA_DIR": str(tmp_path), "COFFER_SCHEMA_PREFIX": prefix, "COFFER_HEALTH_TIMEOUT": "1.5",
           "COFFER_SEAL": "shamir", "COFFER_LOG_LEVEL": "info"}
    api = Api(f"http://127.0.0.1:{port}", fresh)
    outputs: list[str] = []
    kept: list[str] = []  # the shares and the token: never in any output
    try:
        await _init_restart_unseal(api, env, outputs, kept)
    finally:
        await drop_service_credentials(pg_dsn, prefix)
    output = "\n".join(outputs)
    handed = re.findall(r"coffer (\w+): unsealed \(shamir, key handed over by the gateway in (\d+) ms\)", output)
    assert sorted(name for name, _ in handed) == sorted(["lease", "pki", "secrets", "webhooks"] * 2), output
    opened = set(re.findall(r'"service": "(\w+)", "file": "(\w+)\.[0-9a-f]{16}\.keyring", "event": '
                            r'"service_keyring_opened"', output))
    assert opened == {(s, s) for s in ("gateway", "lease", "pki", "secrets", "webhooks")}, output
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "keyrings").glob("*.keyring")) == \
        ["gateway", "lease", "pki", "secrets", "webhooks"]
    assert not (tmp_path / "kms.key").exists() and (tmp_path / "keyring.sealed").exists()
    assert "v-dist-shamir" not in output and kept and all(k not in output for k in kept)


async def _init_restart_unseal(api: Api, env: dict[str, str], outputs: list[str], kept: list[str]) -> None:
    """init 3/2 on a sealed distributed platform, a secret written; a restart; two shares; the secret read."""
    launcher = await spawn("services.distributed", env)
    try:
        await wait_sealed(api, launcher, timeout=90)
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None,
                                            json={"secret_shares": 3, "secret_threshold": 2})
        assert status == 201, launcher.output
        shares, api.token = init["unseal_shares"], init["token"]
        kept.extend([*shares, init["token"]])
        await wait_healthy(api, launcher, timeout=90)
        status, body, _ = await api.request("PUT", "/v1/secrets/dist/k", json={"value": "v-dist-shamir"})
        assert status == 201, body
    finally:
        await launcher.stop()
        outputs.append(launcher.output)
    again = await spawn("services.distributed", env)
    try:
        await wait_sealed(api, again, timeout=90)
        for share in shares[1:]:
            status, body, _ = await api.request("POST", "/v1/sys/unseal", token=None, json={"share": share})
            assert status == 200, body
        await wait_healthy(api, again, timeout=90)
        status, body, _ = await api.request("GET", "/v1/secrets/dist/k")
        assert status == 200 and body["value"] == "v-dist-shamir", body
    finally:
        await again.stop()
        outputs.append(again.output)


async def test_distributed_awskms_each_process_unseals_by_itself(
        tmp_path: Path, moto_port: int, private_amqp: str, pg_dsn: str, fresh: aiohttp.ClientSession) -> None:
    key_id = await new_key(moto_port)
    port = free_port()
    prefix = "s" + tmp_path.name[-6:].lower().replace("-", "_") + "_"
    prefix = re.sub(r"[^a-z0-9_]", "", prefix)[:12]
    env = {**AWS_ENV, "COFFER_AMQP_URL": private_amqp, "COFFER_DATABASE_URL": pg_dsn, "COFFER_HTTP_PORT": str(port),
           "COFFER_DATA_DIR": str(tmp_path), "COFFER_SCHEMA_PREFIX": prefix, "COFFER_HEALTH_TIMEOUT": "1.5",
           "COFFER_SEAL": "awskms", "COFFER_AWSKMS_KEY_ID": key_id, "COFFER_AWSKMS_REGION": REGION,
           "COFFER_AWSKMS_ENDPOINT_URL": f"http://127.0.0.1:{moto_port}"}
    api = Api(f"http://127.0.0.1:{port}", fresh)
    launcher = await spawn("services.distributed", env)
    try:
        await wait_healthy(api, launcher, timeout=90)
        status, init, _ = await api.request("POST", "/v1/sys/init", token=None)
        assert status == 201, init
        api.token = init["token"]
        assert (await api.request("PUT", "/v1/secrets/dist/k", json={"value": "v-dist-auto"}))[0] == 201
        assert (await api.request("GET", "/v1/secrets/dist/k"))[1]["value"] == "v-dist-auto"
        # sys/seal seals the gateway process; the others keep running
        status, body, _ = await api.request("POST", "/v1/sys/seal")
        assert (status, body) == (200, {"sealed": True, "type": "awskms"}), body
        health = await wait_sealed(api, launcher, timeout=30)
        assert health["reason"] == "sealed_by_operator", health
        status, body, _ = await api.request("GET", "/v1/secrets/dist/k")
        assert status == 503 and body["error"]["details"]["sealed"] is True, body
        assert "exited" not in launcher.output
    finally:
        await launcher.stop()
        await drop_service_credentials(pg_dsn, prefix)
    unsealed = re.findall(r"coffer (\w+): unsealed \(awskms\) in (\d+) ms \(the attempt that opened it: (\d+) ms\)",
                          launcher.output)
    assert sorted(name for name, _, _ in unsealed) == ["gateway", "lease", "pki", "secrets", "webhooks"], \
        launcher.output
    print(f"awskms distributed auto-unseal (ms since start, ms of the attempt; per process, all five starting at "
          f"once): { {n: (int(t), int(a)) for n, t, a in unsealed} }")
    assert (tmp_path / "keyring.sealed").exists() and not (tmp_path / "kms.key").exists()
    assert "v-dist-auto" not in launcher.output and init["token"] not in launcher.output
