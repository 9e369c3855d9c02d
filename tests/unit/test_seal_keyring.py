"""The sealed keyring file: LocalKms on it, KEK rotation across processes, root rotation, migration."""

from __future__ import annotations

import asyncio
import base64
import errno
import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared.crypto import LocalKms, rewrap, seal, unseal
from shared.errors import EncryptionError
from shared.seal import (
    SealedKeyring,
    SealError,
    ShamirSeal,
    Unsealer,
    initialise,
    main,
    open_local_kms,
    rotate_root,
)


def sealed_kms(tmp_path: Path) -> tuple[Path, bytes, list[str], LocalKms]:
    path = tmp_path / "keyring.sealed"
    root_key, shares = asyncio.run(initialise(path, ShamirSeal(5, 3)))
    assert shares is not None
    return path, root_key, shares, open_local_kms(path, root_key)


def assert_no_key_in_clear(path: Path, keys: dict[str, bytes], root_key: bytes) -> None:
    data = path.read_bytes()
    for key in [*keys.values(), root_key]:
        assert base64.b64encode(key) not in data and key.hex().encode() not in data and key not in data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_values_seal_and_unseal_on_a_sealed_keyring(tmp_path: Path) -> None:
    path, root_key, _, kms = sealed_kms(tmp_path)
    sealed = seal(kms, b"value", b"ten/a/1")
    assert unseal(kms, sealed, b"ten/a/1") == b"value"
    assert unseal(open_local_kms(path, root_key), sealed, b"ten/a/1") == b"value"
    assert_no_key_in_clear(path, kms._keys, root_key)
    doc = json.loads(path.read_text())
    assert set(doc) == {"version", "seal", "nonce", "ciphertext", "check"} and doc["version"] == 1
    assert doc["seal"]["type"] == "shamir" and kms.active_key_id not in path.read_text()


def test_rotation_re_encrypts_under_the_root_key_and_another_process_follows(tmp_path: Path) -> None:
    path, root_key, _, kms = sealed_kms(tmp_path)
    other = open_local_kms(path, root_key)  # another process: same file, same R
    old = seal(kms, b"v", b"aad")
    before = path.read_bytes()
    new_id = kms.rotate()
    assert path.read_bytes() != before
    assert_no_key_in_clear(path, kms._keys, root_key)
    assert len(kms.key_ids) == 2
    moved = rewrap(kms, old, b"aad")
    assert moved.kek_id == new_id
    assert other.active_key_id == new_id  # picked up by re-reading and decrypting the file
    assert unseal(other, moved, b"aad") == b"v" and unseal(other, old, b"aad") == b"v"
    # and the other way round
    third_id = other.rotate()
    assert kms.active_key_id == third_id and len(kms.key_ids) == 3
    assert SealedKeyring.read(path).seal_type == "shamir"  # the seal record survives KEK rotations


def test_a_wrong_root_key_and_a_damaged_file_are_told_apart(tmp_path: Path) -> None:
    path, root_key, _, _ = sealed_kms(tmp_path)
    with pytest.raises(SealError) as err:
        open_local_kms(path, bytes(32))
    assert err.value.reason == "wrong_root_key"
    doc = json.loads(path.read_text())
    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[0] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    path.write_text(json.dumps(doc))
    with pytest.raises(SealError) as err:
        open_local_kms(path, root_key)
    assert err.value.reason == "corrupted"
    path.write_text("{not json")
    with pytest.raises(SealError) as err:
        open_local_kms(path, root_key)
    assert err.value.reason == "corrupted"
    with pytest.raises(SealError) as err:
        open_local_kms(tmp_path / "absent", root_key)
    assert err.value.reason == "not_found"


def test_a_clear_key_file_is_byte_for_byte_as_before(tmp_path: Path) -> None:
    kms = LocalKms.load(tmp_path / "k", create=True)
    kms.rotate()
    doc = json.loads((tmp_path / "k").read_text())
    expected = json.dumps({"active": doc["active"], "keys": doc["keys"]}, indent=1).encode()
    assert (tmp_path / "k").read_bytes() == expected


def test_root_rotation_keeps_the_keyring_and_the_old_shares_no_longer_open_it(tmp_path: Path) -> None:
    path, root_key, old_shares, kms = sealed_kms(tmp_path)
    value = seal(kms, b"v", b"aad")
    new_key, new_shares = asyncio.run(rotate_root(path, root_key, ShamirSeal(3, 2)))
    assert new_key != root_key and new_shares is not None and len(new_shares) == 3
    fresh = open_local_kms(path, new_key)
    assert unseal(fresh, value, b"aad") == b"v" and fresh.key_ids == kms.key_ids
    unsealer = Unsealer(SealedKeyring.read(path))
    with pytest.raises(SealError):
        unsealer.add(old_shares[0])
    unsealer.add(new_shares[2])
    unsealer.add(new_shares[0])
    assert unsealer.root_key == new_key
    # a process still holding the old R can no longer read the file: it must be given the new R
    kms.path.touch()
    os.utime(kms.path, ns=(1, 1))
    with pytest.raises(EncryptionError):
        kms.rotate()


def test_migrate_file_to_shamir_and_back_keeps_every_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file, sealed_file = tmp_path / "kms.key", tmp_path / "keyring.sealed"
    kms = LocalKms.load(key_file, create=True)
    kms.rotate()
    values = {f"v{i}".encode(): seal(kms, f"v{i}".encode(), b"aad") for i in range(3)}
    clear_keys = dict(kms._keys)
    assert main(["migrate", "--to", "shamir", "--shares", "5", "--threshold", "3",
                 "--key-file", str(key_file), "--sealed-file", str(sealed_file)]) == 0
    out = capsys.readouterr().out
    shares = [line for line in out.splitlines() if len(line) == 52 and " " not in line]
    assert len(shares) == 5 and "removed" in out
    assert not key_file.exists() and not list(tmp_path.glob("kms.key*"))
    assert_no_key_in_clear(sealed_file, clear_keys, bytes(32))
    # the sealed keyring opens with any three shares and reads every value
    unsealer = Unsealer(SealedKeyring.read(sealed_file))
    for share in (shares[4], shares[1], shares[3]):
        unsealer.add(share)
    assert unsealer.root_key is not None
    sealed_kms_ = open_local_kms(sealed_file, unsealer.root_key)
    assert all(unseal(sealed_kms_, v, b"aad") == k for k, v in values.items())
    # and back to a clear file (recovery), shares on standard input, a wrong one among them
    stdin = io.StringIO(f"{shares[0]}\nnonsense\n{shares[0]}\n\n{shares[2]}\n{shares[3]}\n")
    assert main(["migrate", "--to", "file", "--key-file", str(key_file), "--sealed-file", str(sealed_file)],
                stdin=stdin) == 0
    captured = capsys.readouterr()
    assert "share refused" in captured.err and shares[0] not in captured.err + captured.out
    assert not sealed_file.exists() and stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    back = LocalKms.load(key_file)
    assert back._keys == clear_keys and back.active_key_id == kms.active_key_id
    assert all(unseal(back, v, b"aad") == k for k, v in values.items())


def test_migrate_keeps_the_key_file_when_the_shares_could_not_be_delivered(tmp_path: Path) -> None:
    """The seal attack review: `migrate --to shamir > /dev/full` destroyed kms.key, then failed to print the
    shares: every secret lost. Now the shares go out before the clear file goes, and a failure undoes it."""
    key_file, sealed_file = tmp_path / "kms.key", tmp_path / "keyring.sealed"
    LocalKms.load(key_file, create=True)
    before = key_file.read_bytes()

    class Full(io.StringIO):  # what /dev/full or a closed pipe does to a write
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    saved, sys.stdout = sys.stdout, Full()
    try:
        code = main(["migrate", "--to", "shamir", "--shares", "3", "--threshold", "2",
                     "--key-file", str(key_file), "--sealed-file", str(sealed_file)])
    finally:
        sys.stdout = saved
    assert code == 1 and key_file.read_bytes() == before and not sealed_file.exists()


def test_migrate_refuses_to_overwrite_and_keep_old_renames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file, sealed_file = tmp_path / "kms.key", tmp_path / "keyring.sealed"
    LocalKms.load(key_file, create=True)
    sealed_file.write_text("{}")
    assert main(["migrate", "--to", "shamir", "--key-file", str(key_file), "--sealed-file", str(sealed_file)]) == 1
    assert key_file.exists() and "exists already" in capsys.readouterr().err
    sealed_file.unlink()
    assert main(["migrate", "--to", "shamir", "--key-file", str(key_file), "--sealed-file", str(sealed_file),
                 "--keep-old"]) == 0
    out = capsys.readouterr().out
    assert not key_file.exists() and "kept the old file as" in out and "opens every secret" in out
    assert len(list(tmp_path.glob("kms.key.migrated-*"))) == 1


def test_the_command_runs_as_a_module(tmp_path: Path) -> None:
    key_file = tmp_path / "kms.key"
    LocalKms.load(key_file, create=True)
    proc = subprocess.run([sys.executable, "-m", "shared.seal", "migrate", "--to", "shamir", "--shares", "2",
                           "--threshold", "1", "--key-file", str(key_file)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "keyring.sealed").exists() and len(proc.stdout.strip().splitlines()) == 2 + 1 + 2


def test_concurrent_initialisations_leave_one_keyring_and_the_others_know(tmp_path: Path) -> None:
    import threading

    path, won, lost = tmp_path / "keyring.sealed", [], []

    def init() -> None:
        try:
            won.append(asyncio.run(initialise(path, ShamirSeal(2, 1)))[0])
        except SealError as exc:
            lost.append(exc.reason)

    threads = [threading.Thread(target=init) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and lost == ["exists"] * 7
    assert SealedKeyring.read(path).verify(won[0])
