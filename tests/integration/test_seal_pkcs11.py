"""The pkcs11 seal on SoftHSM2: R encrypted by a non-extractable AES key inside the token.

SoftHSM2 reads ``SOFTHSM2_CONF`` once per process (at C_Initialize), so this module points it at a token
directory of its own before anything loads the library; a fresh process measures the auto-unseal.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.crypto import LocalKms, seal, unseal
from shared.seal import (
    Pkcs11Seal,
    SealError,
    SealUnavailable,
    auto_unseal,
    initialise,
    migrate_to_file,
    migrate_to_sealed,
)

LIBRARY = "/usr/lib/softhsm/libsofthsm2.so"
PIN, SO_PIN = "4821-coffer-pin", "9173-coffer-so"

pytestmark = pytest.mark.skipif(not (Path(LIBRARY).exists() and shutil.which("softhsm2-util")),
                                reason="SoftHSM2 (Debian package softhsm2) is not installed: make test installs it")


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SoftHSM2 token directory of this module's with two tokens: ``coffer`` and ``spare``."""
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    saved = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    for label in ("coffer", "spare"):
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SO_PIN],
                       check=True, capture_output=True, timeout=30)
    import pkcs11

    pkcs11.lib(LIBRARY).reinitialize()  # in case an earlier test loaded it with other tokens
    yield base
    if saved is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = saved


def hsm_seal(key_label: str = "coffer-root", *, pin: str = PIN, token: str = "coffer",
             library: str = LIBRARY) -> Pkcs11Seal:
    return Pkcs11Seal(library, token, key_label, pin)


async def test_init_and_reopen(hsm: Path, tmp_path: Path) -> None:
    path = tmp_path / "keyring.sealed"
    root_key, shares = await initialise(path, hsm_seal("reopen"))
    assert shares is None
    text = path.read_text()
    record = json.loads(text)["seal"]
    assert record["type"] == "pkcs11" and record["mechanism"] == "CKM_AES_GCM" and record["key_label"] == "reopen"
    assert base64.b64encode(root_key).decode() not in text and PIN not in text and "pin" not in record
    again, kms = await auto_unseal(path, hsm_seal("reopen"))
    assert again == root_key
    assert unseal(kms, seal(kms, b"v", b"aad"), b"aad") == b"v"
    # a second initialisation reuses the key of that label (another R, another record)
    second, _ = await initialise(tmp_path / "two.sealed", hsm_seal("reopen"))
    assert second != root_key and (await auto_unseal(tmp_path / "two.sealed", hsm_seal("reopen")))[0] == second


async def test_the_hsm_key_is_not_extractable(hsm: Path, tmp_path: Path) -> None:
    import pkcs11
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.exceptions import AttributeSensitive, KeyUnextractable, PKCS11Error

    await initialise(tmp_path / "keyring.sealed", hsm_seal("no-export"))
    with pkcs11.lib(LIBRARY).get_token(token_label="coffer").open(user_pin=PIN, rw=True) as session:
        key = session.get_key(label="no-export", key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY)
        assert key[Attribute.EXTRACTABLE] is False and key[Attribute.SENSITIVE] is True
        assert key[Attribute.TOKEN] is True and key[Attribute.PRIVATE] is True
        with pytest.raises(AttributeSensitive):
            key[Attribute.VALUE]  # noqa: B018 - reading it is the test
        wrapper = session.generate_key(KeyType.AES, 256, label="wrapper", store=False)
        with pytest.raises((KeyUnextractable, PKCS11Error)):
            wrapper.wrap_key(key, mechanism=Mechanism.AES_KEY_WRAP_PAD)
        # an extractable key under the label is refused, not used
        session.generate_key(KeyType.AES, 256, label="exportable", store=True,
                             template={Attribute.SENSITIVE: False, Attribute.EXTRACTABLE: True})
    with pytest.raises(SealError) as err:
        await initialise(tmp_path / "other.sealed", hsm_seal("exportable"))
    assert err.value.reason == "hsm_key_extractable" and not (tmp_path / "other.sealed").exists()


async def test_wrong_pin_is_a_seal_error_that_names_no_pin(hsm: Path, tmp_path: Path) -> None:
    path = tmp_path / "keyring.sealed"
    await initialise(path, hsm_seal("pin"))
    with pytest.raises(SealError) as err:
        await auto_unseal(path, hsm_seal("pin", pin="0000-wrong"))
    assert err.value.reason == "wrong_pin"
    assert "0000-wrong" not in str(err.value) and PIN not in str(err.value)
    assert "0000-wrong" not in repr(hsm_seal(pin="0000-wrong"))


async def test_missing_library_token_or_key(hsm: Path, tmp_path: Path) -> None:
    path = tmp_path / "keyring.sealed"
    await initialise(path, hsm_seal("present"))
    with pytest.raises(SealUnavailable) as err:
        await auto_unseal(path, hsm_seal("present", library=str(tmp_path / "libnothing.so")))
    assert err.value.reason == "hsm_unavailable"
    doc = json.loads(path.read_text())
    doc["seal"]["token_label"] = "no-such-token"  # the token the record names is not there
    path.write_text(json.dumps(doc))
    with pytest.raises(SealUnavailable) as err:
        await auto_unseal(path, hsm_seal("present"))
    assert err.value.reason == "hsm_unavailable" and "no-such-token" in err.value.message
    with pytest.raises(SealUnavailable):  # init too
        await initialise(tmp_path / "x.sealed", hsm_seal("present", token="no-such-token"))
    # the record names the key that sealed R; pointed at the same label on another token (another key),
    # the HSM can't open it
    await initialise(tmp_path / "spare.sealed", hsm_seal("present", token="spare"))
    doc["seal"]["token_label"] = "spare"
    path.write_text(json.dumps(doc))
    with pytest.raises(SealError) as refused:
        await auto_unseal(path, hsm_seal("present"))
    assert refused.value.reason == "hsm_refused"
    doc["seal"]["token_label"] = "coffer"
    path.write_text(json.dumps(doc))
    doc["seal"]["key_label"] = "never-made"
    path.write_text(json.dumps(doc))
    with pytest.raises(SealError) as missing:
        await auto_unseal(path, hsm_seal("present"))
    assert missing.value.reason == "hsm_key_missing"


async def test_the_hsm_away_then_back(hsm: Path, tmp_path: Path) -> None:
    """The token's directory taken away (an HSM unplugged): unavailable; put back: the next attempt opens."""
    path = tmp_path / "keyring.sealed"
    root_key, _ = await initialise(path, hsm_seal("away", token="spare"))
    token_dirs = list((hsm / "tokens").iterdir())
    spare = next(d for d in token_dirs if b"spare" in (d / "token.object").read_bytes())
    shutil.move(spare, hsm / "unplugged")
    try:
        with pytest.raises(SealUnavailable):
            await auto_unseal(path, hsm_seal("away", token="spare"))
        with pytest.raises(SealUnavailable):  # and still, attempt after attempt
            await auto_unseal(path, hsm_seal("away", token="spare"))
    finally:
        shutil.move(hsm / "unplugged", spare)
    assert (await auto_unseal(path, hsm_seal("away", token="spare")))[0] == root_key


async def test_migrate_file_to_pkcs11_and_back(hsm: Path, tmp_path: Path) -> None:
    key_file, sealed_file = tmp_path / "kms.key", tmp_path / "keyring.sealed"
    kms = LocalKms.load(key_file, create=True)
    value = seal(kms, b"v", b"aad")
    await migrate_to_sealed(key_file, sealed_file, hsm_seal("migrate"))
    assert not key_file.exists()
    root_key, sealed_kms = await auto_unseal(sealed_file, hsm_seal("migrate"))
    sealed_kms.rotate()
    assert unseal(sealed_kms, value, b"aad") == b"v"
    await migrate_to_file(sealed_file, key_file, root_key)
    back = LocalKms.load(key_file)
    assert unseal(back, value, b"aad") == b"v" and len(back.key_ids) == 2


def test_the_command_line_takes_the_pin_from_a_file(hsm: Path, tmp_path: Path) -> None:
    key_file, pin_file = tmp_path / "kms.key", tmp_path / "pin"
    LocalKms.load(key_file, create=True)
    pin_file.write_text(PIN + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    common = ["--key-file", str(key_file), "--pkcs11-pin-file", str(pin_file)]
    proc = subprocess.run([sys.executable, "-m", "shared.seal", "migrate", "--to", "pkcs11", *common,
                           "--pkcs11-token", "coffer", "--pkcs11-key", "cli"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert not key_file.exists() and PIN not in proc.stdout + proc.stderr
    proc = subprocess.run([sys.executable, "-m", "shared.seal", "migrate", "--to", "file", *common],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert key_file.exists() and not (tmp_path / "keyring.sealed").exists()


UNSEAL_TIMING = """
import asyncio, sys, time
started = time.perf_counter()
from shared.seal import Pkcs11Seal, auto_unseal
imported = time.perf_counter()
asyncio.run(auto_unseal(sys.argv[1], Pkcs11Seal(sys.argv[2], "coffer", "timing", sys.argv[3])))
print(f"{imported - started:.3f} {time.perf_counter() - imported:.3f}")
"""


async def test_auto_unseal_time_of_a_fresh_process(hsm: Path, tmp_path: Path) -> None:
    path = tmp_path / "keyring.sealed"
    await initialise(path, hsm_seal("timing"))
    times = []
    for _ in range(3):
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", UNSEAL_TIMING, str(path), LIBRARY, PIN], capture_output=True,
            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
        assert proc.returncode == 0, proc.stderr
        times.append(tuple(float(t) for t in proc.stdout.split()))
    print(f"pkcs11 auto-unseal per process (import s, unseal s): {times}")
    started = time.perf_counter()
    await auto_unseal(path, hsm_seal("timing"))
    print(f"pkcs11 auto-unseal in a warm process: {time.perf_counter() - started:.4f} s")
    assert min(t[1] for t in times) < 1.0
