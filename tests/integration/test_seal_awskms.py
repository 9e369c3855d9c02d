"""The awskms seal on moto's server: R encrypted by a KMS key, back by Decrypt, KMS away or key disabled."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiobotocore.session import get_session

from shared.crypto import seal, unseal
from shared.seal import (
    AwsKmsSeal,
    SealedKeyring,
    SealError,
    SealFailure,
    SealUnavailable,
    auto_unseal,
    initialise,
    migrate_to_file,
    migrate_to_sealed,
)
from tests.conftest import free_port, start_moto

REGION = "us-east-1"




@pytest.fixture(scope="module", autouse=True)
def aws_credentials() -> Iterator[None]:
    """The seal takes the usual AWS credential chain: the environment here (moto accepts anything)."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.pop("AWS_SESSION_TOKEN", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    port = free_port()
    proc = start_moto(port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


async def kms_call(endpoint: str, op: str, **kw: object) -> dict[str, object]:
    async with get_session().create_client("kms", region_name=REGION, endpoint_url=endpoint) as kms:
        return dict(await getattr(kms, op)(**kw))


@pytest.fixture
async def key_id(moto: str) -> AsyncIterator[str]:
    answer = await kms_call(moto, "create_key", Description="coffer root key seal", KeyUsage="ENCRYPT_DECRYPT")
    yield str(answer["KeyMetadata"]["KeyId"])  # type: ignore[index]


async def test_init_then_a_fresh_process_gets_the_root_key_back(tmp_path: Path, moto: str, key_id: str) -> None:
    path = tmp_path / "keyring.sealed"
    root_key, shares = await initialise(path, AwsKmsSeal(key_id, REGION, moto))
    assert shares is None
    record = json.loads(path.read_text())["seal"]
    assert record["type"] == "awskms" and key_id in record["key_id"] and record["region"] == REGION
    assert base64.b64encode(root_key).decode() not in path.read_text()
    # the blob is bound to the encryption context: a Decrypt without it is refused by KMS
    with pytest.raises(Exception, match="InvalidCiphertext"):
        await kms_call(moto, "decrypt", CiphertextBlob=base64.b64decode(record["ciphertext_blob"]))
    # reopen (another process would do exactly this)
    again, kms = await auto_unseal(path, AwsKmsSeal(None, REGION, moto))
    assert again == root_key
    value = seal(kms, b"v", b"aad")
    assert unseal(kms, value, b"aad") == b"v"


async def test_kms_away_is_unavailable_and_a_disabled_key_too(tmp_path: Path, key_id: str) -> None:
    port = free_port()
    proc = start_moto(port)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        answer = await kms_call(endpoint, "create_key", Description="coffer", KeyUsage="ENCRYPT_DECRYPT")
        own_key = str(answer["KeyMetadata"]["KeyId"])  # type: ignore[index]
        path = tmp_path / "keyring.sealed"
        root_key, _ = await initialise(path, AwsKmsSeal(own_key, REGION, endpoint))
        # disabled: the key may come back, so the process stays sealed and retries (not SealError)
        await kms_call(endpoint, "disable_key", KeyId=own_key)
        with pytest.raises(SealUnavailable) as err:
            await auto_unseal(path, AwsKmsSeal(None, REGION, endpoint))
        assert err.value.reason == "kms_unavailable" and "Disabled" in err.value.message
        await kms_call(endpoint, "schedule_key_deletion", KeyId=own_key, PendingWindowInDays=7)
        with pytest.raises(SealUnavailable, match="PendingDeletion"):
            await auto_unseal(path, AwsKmsSeal(None, REGION, endpoint))
        await kms_call(endpoint, "cancel_key_deletion", KeyId=own_key)  # leaves it Disabled, as AWS does
        await kms_call(endpoint, "enable_key", KeyId=own_key)
        assert (await auto_unseal(path, AwsKmsSeal(None, REGION, endpoint)))[0] == root_key
    finally:
        proc.terminate()
        proc.wait(10)
    # away: nothing listens on the port any more
    started = time.monotonic()
    with pytest.raises(SealUnavailable) as away:
        await auto_unseal(path, AwsKmsSeal(None, REGION, endpoint))
    assert away.value.reason == "kms_unreachable" and time.monotonic() - started < 15
    for err_ in (err.value, away.value):
        assert base64.b64encode(root_key).decode() not in str(err_)
        assert json.loads(path.read_text())["seal"]["ciphertext_blob"][:16] not in str(err_)


async def test_a_blob_of_another_keyring_is_a_seal_error(tmp_path: Path, moto: str, key_id: str) -> None:
    first, second = tmp_path / "a.sealed", tmp_path / "b.sealed"
    await initialise(first, AwsKmsSeal(key_id, REGION, moto))
    await initialise(second, AwsKmsSeal(key_id, REGION, moto))
    doc = json.loads(second.read_text())
    doc["seal"] = json.loads(first.read_text())["seal"]  # a record swapped in: KMS decrypts, the check refuses
    second.write_text(json.dumps(doc))
    with pytest.raises(SealError) as err:
        await auto_unseal(second, AwsKmsSeal(None, REGION, moto))
    assert err.value.reason == "wrong_root_key"
    blob = bytearray(base64.b64decode(doc["seal"]["ciphertext_blob"]))
    blob[-1] ^= 1  # a damaged blob: KMS refuses to decrypt it, and trying again won't help
    doc["seal"]["ciphertext_blob"] = base64.b64encode(bytes(blob)).decode()
    second.write_text(json.dumps(doc))
    with pytest.raises(SealFailure) as refused:
        await auto_unseal(second, AwsKmsSeal(None, REGION, moto))
    assert isinstance(refused.value, SealError) and refused.value.reason == "kms_refused", refused.value.message


async def test_migrate_file_to_awskms_and_back(tmp_path: Path, moto: str, key_id: str) -> None:
    from shared.crypto import LocalKms

    key_file, sealed_file = tmp_path / "kms.key", tmp_path / "keyring.sealed"
    kms = LocalKms.load(key_file, create=True)
    value = seal(kms, b"v", b"aad")
    done = await migrate_to_sealed(key_file, sealed_file, AwsKmsSeal(key_id, REGION, moto))
    assert not key_file.exists() and done.root_key is not None
    root_key, sealed_kms = await auto_unseal(sealed_file, AwsKmsSeal(None, REGION, moto))
    assert unseal(sealed_kms, value, b"aad") == b"v"
    await migrate_to_file(sealed_file, key_file, root_key)
    assert not sealed_file.exists() and unseal(LocalKms.load(key_file), value, b"aad") == b"v"
    assert SealedKeyring  # noqa: B018 - imported for the reader: the format is SealedKeyring's


UNSEAL_TIMING = """
import asyncio, sys, time
started = time.perf_counter()
from shared.seal import AwsKmsSeal, auto_unseal
imported = time.perf_counter()
asyncio.run(auto_unseal(sys.argv[1], AwsKmsSeal(None, "us-east-1", sys.argv[2])))
print(f"{imported - started:.3f} {time.perf_counter() - imported:.3f}")
"""


async def test_auto_unseal_time_of_a_fresh_process(tmp_path: Path, moto: str, key_id: str) -> None:
    path = tmp_path / "keyring.sealed"
    await initialise(path, AwsKmsSeal(key_id, REGION, moto))
    times = []
    for _ in range(3):
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", UNSEAL_TIMING, str(path), moto], capture_output=True, text=True,
            timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
        assert proc.returncode == 0, proc.stderr
        times.append(tuple(float(t) for t in proc.stdout.split()))
    print(f"awskms auto-unseal per process (import s, unseal s): {times}")
    assert min(t[1] for t in times) < 1.0
