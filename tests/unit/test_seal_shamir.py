"""The shamir seal: R split into shares, any threshold of them give it back, nothing else does."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.seal import SealedKeyring, SealError, ShamirSeal, Unsealer, _share_digest, initialise


def make(tmp_path: Path, shares: int = 5, threshold: int = 3, name: str = "keyring.sealed") -> tuple[
        bytes, list[str], SealedKeyring]:
    path = tmp_path / name
    root_key, given = asyncio.run(initialise(path, ShamirSeal(shares, threshold)))
    assert given is not None and len(given) == shares
    return root_key, given, SealedKeyring.read(path)


def unseal_with(sealed: SealedKeyring, shares: list[str]) -> bytes | None:
    unsealer = Unsealer(sealed)
    for share in shares:
        unsealer.add(share)
    return unsealer.root_key


def assert_no_secret_in(err: SealError, *secrets_: str | bytes) -> None:
    text = str(err) + repr(err) + err.message
    for secret in secrets_:
        s = secret if isinstance(secret, str) else base64.b64encode(secret).decode()
        assert s not in text and s[:12] not in text
        if isinstance(secret, bytes):
            assert secret.hex() not in text


def test_any_three_of_five_give_the_root_key_and_two_do_not(tmp_path: Path) -> None:
    root_key, shares, sealed = make(tmp_path)
    for trio in itertools.combinations(shares, 3):
        for order in itertools.permutations(trio):
            assert unseal_with(sealed, list(order)) == root_key
    for pair in itertools.combinations(shares, 2):
        unsealer = Unsealer(sealed)
        assert [unsealer.add(s) for s in pair] == [(1, 3), (2, 3)]
        assert unsealer.root_key is None and unsealer.sealed
    assert sealed.open(root_key)[1].startswith("kek_")


def test_a_share_of_another_split_is_refused_and_spoils_nothing(tmp_path: Path) -> None:
    _, shares, sealed = make(tmp_path)
    _, others, _ = make(tmp_path, name="other.sealed")
    unsealer = Unsealer(sealed)
    unsealer.add(shares[0])
    with pytest.raises(SealError) as err:
        unsealer.add(others[1])
    assert err.value.reason == "wrong_share"
    assert_no_secret_in(err.value, others[1], shares[0])
    assert unsealer.progress == 1
    unsealer.add(shares[1])
    assert unsealer.add(shares[2]) == (3, 3) and unsealer.root_key is not None


def test_a_mistyped_share_is_refused_when_given(tmp_path: Path) -> None:
    _, shares, sealed = make(tmp_path)
    raw = bytearray(base64.b64decode(shares[1]))
    raw[10] ^= 0x01  # a bit of y1: the right split, the right index, the wrong value
    mistyped = base64.b64encode(bytes(raw)).decode()
    unsealer = Unsealer(sealed)
    unsealer.add(shares[0])
    with pytest.raises(SealError) as err:
        unsealer.add(mistyped)
    assert err.value.reason == "wrong_share" and unsealer.progress == 1
    assert_no_secret_in(err.value, mistyped, shares[1])
    unsealer.add(shares[3])
    assert unsealer.add(shares[4]) == (3, 3) and unsealer.root_key is not None


@pytest.mark.parametrize("bad", [
    "", "not base64 at all!", "AAAA", base64.b64encode(b"\x01" * 38).decode(), base64.b64encode(b"\x02" * 38).decode(),
])
def test_malformed_shares_are_refused(tmp_path: Path, bad: str) -> None:
    _, shares, sealed = make(tmp_path)
    unsealer = Unsealer(sealed)
    unsealer.add(shares[0])
    with pytest.raises(SealError) as err:
        unsealer.add(bad)
    assert err.value.reason in ("malformed_share", "wrong_share") and unsealer.progress == 1


def test_an_index_out_of_range_is_malformed(tmp_path: Path) -> None:
    _, shares, sealed = make(tmp_path)
    raw = bytearray(base64.b64decode(shares[0]))
    raw[5] = 9
    with pytest.raises(SealError) as err:
        Unsealer(sealed).add(base64.b64encode(bytes(raw)).decode())
    assert err.value.reason == "malformed_share"


def test_a_repeated_share_is_refused_and_resets_nothing(tmp_path: Path) -> None:
    root_key, shares, sealed = make(tmp_path)
    unsealer = Unsealer(sealed)
    unsealer.add(shares[2])
    unsealer.add(shares[4])
    with pytest.raises(SealError) as err:
        unsealer.add(shares[4])
    assert err.value.reason == "repeated_share" and unsealer.progress == 2
    assert_no_secret_in(err.value, shares[4], root_key)
    # the same share with whitespace around and inside is still the same share
    with pytest.raises(SealError):
        unsealer.add(" " + shares[2][:10] + "\n" + shares[2][10:] + " ")
    assert unsealer.add(shares[0]) == (3, 3) and unsealer.root_key == root_key


def test_a_failed_combination_refuses_the_last_share_and_keeps_the_others(tmp_path: Path) -> None:
    """Only a tampered record can get there (each share is checked against its digest): forge a share and
    its digest, as an attacker with write access to the file could."""
    root_key, shares, sealed = make(tmp_path)
    raw = bytearray(base64.b64decode(shares[2]))
    raw[20] ^= 0xFF
    forged = bytes(raw)
    record = json.loads(json.dumps(sealed.record))
    record["share_digests"]["3"] = _share_digest(forged)
    tampered = SealedKeyring(sealed.path, record, sealed.nonce, sealed.ciphertext, sealed.check)
    unsealer = Unsealer(tampered)
    unsealer.add(shares[0])
    unsealer.add(shares[1])
    with pytest.raises(SealError) as err:
        unsealer.add(base64.b64encode(forged).decode())
    assert err.value.reason == "wrong_share" and "not counted" in err.value.message
    assert_no_secret_in(err.value, root_key, base64.b64encode(forged).decode())
    assert unsealer.progress == 2 and unsealer.failures == 1 and unsealer.root_key is None
    assert unsealer.add(shares[4]) == (3, 3) and unsealer.root_key == root_key


def test_reset_forgets_the_shares_given(tmp_path: Path) -> None:
    root_key, shares, sealed = make(tmp_path)
    unsealer = Unsealer(sealed)
    unsealer.add(shares[0])
    unsealer.add(shares[1])
    unsealer.reset()
    assert unsealer.progress == 0
    unsealer.add(shares[1])  # no longer a repeat
    unsealer.add(shares[2])
    assert unsealer.add(shares[3]) == (3, 3) and unsealer.root_key == root_key


def test_threshold_one_and_sixteen_of_sixteen(tmp_path: Path) -> None:
    root_key, shares, sealed = make(tmp_path / "one", 3, 1)
    for share in shares:
        assert unseal_with(sealed, [share]) == root_key
    root_key, shares, sealed = make(tmp_path / "all", 16, 16)
    random.shuffle(shares)
    unsealer = Unsealer(sealed)
    for n, share in enumerate(shares[:15], 1):
        assert unsealer.add(share) == (n, 16)
    assert unsealer.root_key is None
    assert unsealer.add(shares[15]) == (16, 16) and unsealer.root_key == root_key


@pytest.mark.parametrize(("shares", "threshold"), [(0, 0), (3, 0), (2, 3), (17, 3), (17, 17)])
def test_bad_counts_are_refused(shares: int, threshold: int) -> None:
    with pytest.raises(SealError) as err:
        ShamirSeal(shares, threshold)
    assert err.value.reason == "invalid_parameters"


def test_the_file_holds_no_share_and_no_root_key(tmp_path: Path) -> None:
    root_key, shares, sealed = make(tmp_path)
    text = (tmp_path / "keyring.sealed").read_text()
    for secret in [*shares, base64.b64encode(root_key).decode(), root_key.hex()]:
        assert secret not in text
    for share in shares:
        raw = base64.b64decode(share)
        assert base64.b64encode(raw[6:22]).decode() not in text and raw[6:22].hex() not in text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), n=st.integers(1, 16))
def test_any_threshold_of_shares_opens_and_one_fewer_does_not(tmp_path: Path, data: st.DataObject, n: int) -> None:
    k = data.draw(st.integers(1, n), label="threshold")
    seal = ShamirSeal(n, k)
    root_key = bytes(data.draw(st.binary(min_size=32, max_size=32), label="root key"))
    record, shares = seal.split(root_key)
    kek_id = "kek_x"
    path = tmp_path / f"prop-{n}-{k}-{root_key.hex()[:8]}"
    SealedKeyring.write(path, root_key, record, {kek_id: bytes(32)}, kek_id, replace=True)
    sealed = SealedKeyring.read(path)
    chosen = data.draw(st.permutations(shares), label="order")[:k]
    unsealer = Unsealer(sealed)
    for share in chosen[:-1]:
        unsealer.add(share)
    assert unsealer.root_key is None
    assert unsealer.add(chosen[-1]) == (k, k)
    assert unsealer.root_key == root_key
    assert sealed.open(root_key) == ({kek_id: bytes(32)}, kek_id)
