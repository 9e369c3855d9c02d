"""Envelope encryption and the KMS provider interface.

A value is sealed with a fresh 256-bit data key (AES-256-GCM, random 96-bit
nonce, caller-supplied associated data); the data key is wrapped by the KMS's
active key-encryption key (KEK), bound to the same associated data. Nothing
here ever falls back to plaintext: every failure is ``EncryptionError``, whose
message names no key material.

Provider ``local``: a JSON key file (mode 0600) holding several KEKs by id, one
of them active. Rotation adds a KEK and makes it active; old ones stay until
nothing is wrapped by them. How the keyring is kept in that file is a
``KeyringStore``: ``ClearKeyFile`` (the default: the KEKs in base64, in the
clear) or a sealed keyring (``shared.seal.SealedStore``: encrypted under a root
key held in memory only).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.errors import EncryptionError

KEY_BYTES = 32
NONCE_BYTES = 12


@dataclass(frozen=True)
class Sealed:
    """A sealed value as stored: which KEK, the wrapped data key, nonce, ciphertext."""

    kek_id: str
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes


class KmsProvider(Protocol):
    """Wraps and unwraps data keys; never sees the values they encrypt."""

    @property
    def active_key_id(self) -> str: ...

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]: ...

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes: ...

    def rotate(self) -> str: ...


def _aesgcm_seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _aesgcm_open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


class KeyringStore(Protocol):
    """How a keyring ``{active, keys}`` is written to and read from the key file's bytes.

    ``parse`` raises ``ValueError`` (or ``KeyError``/``TypeError``) on content it can't open; the
    message and the exception name no key material.
    """

    def dump(self, keys: Mapping[str, bytes], active: str) -> bytes: ...

    def parse(self, data: bytes) -> tuple[dict[str, bytes], str]: ...


class ClearKeyFile:
    """Today's key file: ``{"active": id, "keys": {id: base64}}``, the KEKs in the clear."""

    def dump(self, keys: Mapping[str, bytes], active: str) -> bytes:
        return json.dumps(
            {"active": active, "keys": {k: base64.b64encode(v).decode() for k, v in keys.items()}},
            indent=1,
        ).encode()

    def parse(self, data: bytes) -> tuple[dict[str, bytes], str]:
        doc = json.loads(data)
        keys = {kid: base64.b64decode(k) for kid, k in doc["keys"].items()}
        active = doc["active"]
        if active not in keys or any(len(k) != KEY_BYTES for k in keys.values()):
            raise ValueError("inconsistent key file")
        return keys, active


CLEAR_KEY_FILE = ClearKeyFile()


class LocalKms:
    """KEKs in a local key file, kept by a ``KeyringStore`` (by default ``ClearKeyFile``)."""

    def __init__(self, path: Path, keys: dict[str, bytes], active: str, store: KeyringStore | None = None) -> None:
        self.path = path
        self._keys = keys
        self._active = active
        self._store: KeyringStore = store or CLEAR_KEY_FILE
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def _follow_file(self) -> None:
        """Pick up a rotation done by another process sharing the key file (one stat)."""
        stamp = self._file_stamp()
        if stamp != self._stamp and stamp != (0, 0):
            fresh = LocalKms.load(self.path, store=self._store)
            self._keys, self._active, self._stamp = fresh._keys, fresh._active, stamp

    @classmethod
    def load(cls, path: Path, *, create: bool = False, store: KeyringStore | None = None) -> LocalKms:
        """Read the key file; with ``create``, make it (0600, atomically) if missing."""
        path = Path(path)
        store = store or CLEAR_KEY_FILE
        if not path.exists():
            if not create:
                raise EncryptionError("KMS key file not found", details={"path": str(path)})
            kek_id = "kek_" + secrets.token_hex(8)
            cls._write(path, store.dump({kek_id: secrets.token_bytes(KEY_BYTES)}, kek_id), replace=False)
        try:
            keys, active = store.parse(path.read_bytes())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EncryptionError(
                "KMS key file unreadable", details={"path": str(path), "reason": type(exc).__name__}
            ) from None
        return cls(path, keys, active, store)

    @staticmethod
    def _doc(keys: dict[str, bytes], active: str) -> bytes:
        return CLEAR_KEY_FILE.dump(keys, active)

    @staticmethod
    def _write(path: Path, data: bytes, *, replace: bool) -> None:
        """Write a private (0600) temp file, then move it into place atomically.

        ``replace=False`` (first start): link, so that when several processes
        start at once the first file wins and the others read it.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)

    @property
    def active_key_id(self) -> str:
        self._follow_file()
        return self._active

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def key(self, kek_id: str) -> bytes | None:
        """A key of the keyring by id (the service keyrings' root shares, ``shared.keyring``)."""
        self._follow_file()
        return self._keys.get(kek_id)

    def add_key(self, kek_id: str) -> bytes:
        """Add a random key under ``kek_id`` (not made active) unless the file has one; the caller holds
        the file's lock (``shared.keyring``)."""
        fresh = LocalKms.load(self.path, store=self._store)
        self._keys, self._active, self._stamp = fresh._keys, fresh._active, fresh._stamp
        if kek_id not in self._keys:
            keys = {**self._keys, kek_id: secrets.token_bytes(KEY_BYTES)}
            self._write(self.path, self._store.dump(keys, self._active), replace=True)
            self._keys, self._stamp = keys, self._file_stamp()
        return self._keys[kek_id]

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        self._follow_file()
        kek_id = self._active
        try:
            return kek_id, _aesgcm_seal(self._keys[kek_id], data_key, kek_id.encode() + b"|" + aad)
        except Exception:  # noqa: BLE001
            raise EncryptionError("data key could not be wrapped") from None

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if not kek_id.startswith("kek_"):  # a service keyring's root share never opens a data key
            raise EncryptionError("data key is wrapped by an unknown KEK", details={"kek_id": kek_id})
        key = self._keys.get(kek_id)
        if key is None:
            self._follow_file()  # another process may have rotated the file
            key = self._keys.get(kek_id)
        if key is None:
            raise EncryptionError("data key is wrapped by an unknown KEK", details={"kek_id": kek_id})
        try:
            return _aesgcm_open(key, wrapped, kek_id.encode() + b"|" + aad)
        except (InvalidTag, ValueError):
            raise EncryptionError("data key could not be unwrapped") from None

    def reseal(self, store: KeyringStore) -> None:
        """The same keys written again through another store (a new root key: ``sys/rotate-root``),
        atomically, checked by reading them back; this object keeps working on the new file. The caller
        holds the file's lock (``shared.keyring``)."""
        fresh = LocalKms.load(self.path, store=self._store)
        keys, active = fresh._keys, fresh._active
        self._write(self.path, store.dump(keys, active), replace=True)
        back = LocalKms.load(self.path, store=store)
        if (back._keys, back._active) != (keys, active):
            raise EncryptionError("the re-sealed keyring does not read back")
        self._keys, self._active, self._store, self._stamp = keys, active, store, back._stamp

    def retire_legacy(self) -> int:
        """Drop every KEK (``kek_…``) of this root keyring, keeping the services' shares, once nothing is
        sealed under them any more (the caller checked, and holds the file's lock): a database copy from
        before the key hierarchy then opens nothing. A fresh KEK, which never sealed anything, stays active
        (the file's format wants one). How many were dropped."""
        fresh = LocalKms.load(self.path, store=self._store)
        old = [k for k in fresh._keys if k.startswith("kek_")]
        kek_id = "kek_" + secrets.token_hex(8)
        keys = {**{k: v for k, v in fresh._keys.items() if not k.startswith("kek_")},
                kek_id: secrets.token_bytes(KEY_BYTES)}
        self._write(self.path, self._store.dump(keys, kek_id), replace=True)
        self._keys, self._active, self._stamp = keys, kek_id, self._file_stamp()
        return len(old)

    def rotate(self) -> str:
        """Add a KEK, make it active, rewrite the key file atomically (0600).

        Callers serialise rotations across processes (an advisory lock): the
        file is re-read first so no other process's key is ever dropped.
        """
        self._follow_file()
        kek_id = "kek_" + secrets.token_hex(8)
        keys = {**self._keys, kek_id: secrets.token_bytes(KEY_BYTES)}
        self._write(self.path, self._store.dump(keys, kek_id), replace=True)
        self._keys, self._active, self._stamp = keys, kek_id, self._file_stamp()
        return kek_id


def seal(kms: KmsProvider, plaintext: bytes, aad: bytes) -> Sealed:
    """Encrypt ``plaintext`` under a fresh data key bound to ``aad``."""
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(NONCE_BYTES)
    try:
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, aad)
    except Exception:  # noqa: BLE001
        raise EncryptionError("value could not be encrypted") from None
    kek_id, wrapped = kms.wrap(data_key, aad)
    return Sealed(kek_id=kek_id, wrapped_key=wrapped, nonce=nonce, ciphertext=ciphertext)


def unseal(kms: KmsProvider, sealed: Sealed, aad: bytes) -> bytes:
    """Decrypt; ``EncryptionError`` if the key, the data or ``aad`` don't match."""
    data_key = kms.unwrap(sealed.kek_id, sealed.wrapped_key, aad)
    try:
        return AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except (InvalidTag, ValueError):
        raise EncryptionError("value could not be decrypted") from None


def rewrap(kms: KmsProvider, sealed: Sealed, aad: bytes) -> Sealed:
    """The same ciphertext with its data key wrapped by the active KEK."""
    data_key = kms.unwrap(sealed.kek_id, sealed.wrapped_key, aad)
    kek_id, wrapped = kms.wrap(data_key, aad)
    return Sealed(kek_id=kek_id, wrapped_key=wrapped, nonce=sealed.nonce, ciphertext=sealed.ciphertext)
