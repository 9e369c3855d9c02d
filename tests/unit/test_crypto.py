"""Envelope encryption and the local KMS."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from shared.crypto import LocalKms, Sealed, rewrap, seal, unseal
from shared.errors import EncryptionError


def test_roundtrip_and_fresh_data_key_and_nonce_each_time(tmp_path: Path) -> None:
    kms = LocalKms.load(tmp_path / "k", create=True)
    a, b = seal(kms, b"value", b"ten/a/1"), seal(kms, b"value", b"ten/a/1")
    assert unseal(kms, a, b"ten/a/1") == b"value"
    assert a.nonce != b.nonce and a.wrapped_key != b.wrapped_key and a.ciphertext != b.ciphertext
    assert b"value" not in a.ciphertext


def test_other_associated_data_fails_with_encryption_error(tmp_path: Path) -> None:
    kms = LocalKms.load(tmp_path / "k", create=True)
    sealed = seal(kms, b"value", b"ten/a/1")
    with pytest.raises(EncryptionError) as err:
        unseal(kms, sealed, b"ten/b/1")
    assert "value" not in str(err.value)
    tampered = Sealed(sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext[:-1] + b"\0")
    with pytest.raises(EncryptionError):
        unseal(kms, tampered, b"ten/a/1")


def test_key_file_is_created_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "kms.key"
    kms = LocalKms.load(path, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert LocalKms.load(path).active_key_id == kms.active_key_id


def test_concurrent_first_starts_agree_on_one_key(tmp_path: Path) -> None:
    path, ids = tmp_path / "kms.key", []
    threads = [threading.Thread(target=lambda: ids.append(LocalKms.load(path, create=True).active_key_id))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1


def test_missing_or_corrupt_key_file_is_encryption_error(tmp_path: Path) -> None:
    with pytest.raises(EncryptionError):
        LocalKms.load(tmp_path / "absent")
    (tmp_path / "bad").write_text("{not json")
    with pytest.raises(EncryptionError):
        LocalKms.load(tmp_path / "bad")


def test_rotation_rewraps_without_touching_ciphertext(tmp_path: Path) -> None:
    kms = LocalKms.load(tmp_path / "k", create=True)
    old = seal(kms, b"v", b"aad")
    new_id = kms.rotate()
    moved = rewrap(kms, old, b"aad")
    assert moved.kek_id == new_id != old.kek_id
    assert moved.ciphertext == old.ciphertext and moved.nonce == old.nonce
    assert unseal(kms, moved, b"aad") == b"v"
    # another process holding the old file learns of the new key on first use
    assert unseal(LocalKms.load(tmp_path / "k"), moved, b"aad") == b"v"
    with pytest.raises(EncryptionError):
        unseal(kms, Sealed("kek_unknown", old.wrapped_key, old.nonce, old.ciphertext), b"aad")
