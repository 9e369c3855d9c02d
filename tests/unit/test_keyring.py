"""The key hierarchy (shared/keyring.py) on the real key code: root share + salt → service keyring → tenant KEKs."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from shared import handover, keyring
from shared.crypto import LocalKms, Sealed, seal, unseal
from shared.errors import EncryptionError
from shared.handover import open_service_keyring
from shared.keyring import ServiceKeyring


def _root(tmp_path: Path) -> LocalKms:
    return LocalKms.load(tmp_path / "kms.key", create=True)


def _ring(tmp_path: Path, service: str = "secrets", salt: bytes | None = None) -> ServiceKeyring:
    return open_service_keyring(_root(tmp_path), tmp_path / "keyrings", service, salt or b"s" * 32)


def test_a_value_round_trips_under_a_tenant_kek_and_the_file_holds_no_key(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    sealed = seal(ring.tenant("ten_a"), b"hunter2", b"aad")
    assert sealed.kek_id.startswith(keyring.TENANT_KEK)
    assert unseal(ring.tenant("ten_a"), sealed, b"aad") == b"hunter2"
    text = ring.path.read_text()
    assert "tkek_" not in text and "ten_a" not in text  # the keyring is encrypted as a whole
    assert ring.path.stat().st_mode & 0o777 == 0o600
    # a second process of the service opens the same keyring and the same tenant KEK
    again = _ring(tmp_path)
    assert unseal(again.tenant("ten_a"), sealed, b"aad") == b"hunter2"


def test_another_tenants_view_does_not_open_a_tenants_value(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    sealed = seal(ring.tenant("ten_a"), b"v", b"aad")
    with pytest.raises(EncryptionError):
        unseal(ring.tenant("ten_b"), sealed, b"aad")
    own = seal(ring, b"service value", b"aad")  # the service's own values don't open through a tenant
    with pytest.raises(EncryptionError):
        unseal(ring.tenant("ten_a"), own, b"aad")


def test_a_services_keyring_cant_be_opened_with_another_services_keys(tmp_path: Path) -> None:
    root = _root(tmp_path)
    secrets_ring = open_service_keyring(root, tmp_path / "k", "secrets", b"a" * 32)
    sealed = seal(secrets_ring.tenant("ten_a"), b"v", b"aad")
    # the gateway's share of the root keyring with the secrets service's salt: not K_secrets
    gateway_share = handover.root_share(root, "gateway")
    forged = ServiceKeyring(secrets_ring.path, "secrets", keyring.service_key(gateway_share, b"a" * 32, "secrets"))
    with pytest.raises(EncryptionError):
        forged._load()
    # the right share without the service's salt (which only its database role reads): not K_secrets either
    unsalted = ServiceKeyring(secrets_ring.path, "secrets",
                              keyring.service_key(handover.root_share(root, "secrets"), b"b" * 32, "secrets"))
    with pytest.raises(EncryptionError):
        unsalted._load()
    assert unseal(secrets_ring.tenant("ten_a"), sealed, b"aad") == b"v"


def test_the_root_share_never_opens_a_data_key(tmp_path: Path) -> None:
    root = _root(tmp_path)
    handover.root_share(root, "secrets")
    with pytest.raises(EncryptionError):
        root.unwrap("svc_secrets", b"x" * 60, b"aad")


def test_shred_destroys_a_tenants_keys_and_no_new_one_is_made(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    a, b = seal(ring.tenant("ten_a"), b"a", b"aad"), seal(ring.tenant("ten_b"), b"b", b"aad")
    before = ring.path.read_bytes()
    other = _ring(tmp_path)  # another process of the service, which had the key in memory
    assert unseal(other.tenant("ten_a"), a, b"aad") == b"a"
    assert ring.shred("ten_a") is True
    for view in (ring, other):
        with pytest.raises(EncryptionError):
            unseal(view.tenant("ten_a"), a, b"aad")
        with pytest.raises(EncryptionError):
            seal(view.tenant("ten_a"), b"again", b"aad")
        assert unseal(view.tenant("ten_b"), b, b"aad") == b"b"
    assert ring.shred("ten_a") is False  # idempotent
    assert ring.path.read_bytes() != before


def test_rotation_makes_new_keks_and_old_values_still_open(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    old = seal(ring.tenant("ten_a"), b"a", b"aad")
    own = seal(ring, b"own", b"aad")
    first = ring.active_key_id
    new = ring.rotate()
    assert new != first and ring.active_key_id == new
    assert ring.tenant("ten_a").active_key_id != old.kek_id
    assert set(ring.active_ids()) == {new, ring.tenant("ten_a").active_key_id}
    assert unseal(ring.tenant("ten_a"), old, b"aad") == b"a"
    assert unseal(ring, own, b"aad") == b"own"
    assert unseal(_ring(tmp_path).tenant("ten_a"), old, b"aad") == b"a"


def test_legacy_values_open_through_the_root_keyring_until_moved(tmp_path: Path) -> None:
    root = _root(tmp_path)
    legacy = seal(root, b"old", b"aad")
    ring = open_service_keyring(root, tmp_path / "k", "secrets", b"s" * 32)
    assert unseal(ring.tenant("ten_a"), legacy, b"aad") == b"old"
    assert unseal(ring, legacy, b"aad") == b"old"
    ring.shred("ten_a")
    with pytest.raises(EncryptionError):
        unseal(ring.tenant("ten_a"), legacy, b"aad")


def test_a_damaged_or_foreign_keyring_is_encryption_error_naming_no_key(tmp_path: Path) -> None:
    ring = _ring(tmp_path)
    doc = json.loads(ring.path.read_text())
    doc["service"] = "pki"
    ring.path.write_text(json.dumps(doc))
    with pytest.raises(EncryptionError) as caught:
        _ring(tmp_path)
    assert "keyring" in str(caught.value)


def test_a_fresh_salt_is_a_fresh_keyring_file(tmp_path: Path) -> None:
    one = _ring(tmp_path, salt=secrets.token_bytes(32))
    two = _ring(tmp_path, salt=secrets.token_bytes(32))
    assert one.path != two.path
    sealed = seal(one.tenant("t"), b"v", b"aad")
    with pytest.raises(EncryptionError):
        unseal(two.tenant("t"), Sealed(sealed.kek_id, sealed.wrapped_key, sealed.nonce, sealed.ciphertext), b"aad")
