"""Seals: what protects the root key R behind the keyring (issue #29, api.md §11).

The keyring is today's KEK set ``{"active": id, "keys": {id: key}}``. With a
seal, it is never on disk in the clear: it is encrypted with AES-256-GCM under a
32-byte root key R, and R itself is kept by the seal:

* ``shamir``: R split into shares held by people (pycryptodome's Shamir over
  GF(2^128): R's two 16-byte halves under two independent polynomials at the
  same indices). Nothing on disk gives R back; an ``Unsealer`` gathers shares.
* ``awskms``: R encrypted by a KMS key (Encrypt/Decrypt with the encryption
  context ``{"coffer": "root-key"}``); the record keeps the ciphertext blob.
* ``pkcs11``: R encrypted (CKM_AES_GCM) by a non-extractable AES-256 key inside
  an HSM; the record keeps the IV and the ciphertext.
* ``file``: no R at all: today's clear key file (``shared.crypto.ClearKeyFile``),
  which this module leaves exactly as it is.

The sealed keyring file (JSON, 0600, written atomically)::

    {"version": 1,
     "seal": {"type": "shamir" | "awskms" | "pkcs11", ...no secret...},
     "nonce": base64(12 bytes), "ciphertext": base64(AES-256-GCM(R, keyring JSON, aad)),
     "check": base64(HMAC-SHA256(R, "coffer-seal-check"))}

with ``aad = "coffer-sealed-keyring|v1|<type>"``. ``check`` tells a wrong R
(wrong shares, another KMS key) from a damaged file. The keyring JSON inside is
byte for byte what ``ClearKeyFile`` writes.

Failures are ``SealUnavailable`` (the HSM or KMS can't be reached or refuses for
now: stay sealed, try again with backoff) or ``SealError`` (a wrong or malformed
share, a wrong key or PIN, a damaged file: trying again won't help). Their
messages never contain a share, R, a KEK, a PIN or a KMS ciphertext; ``reason``
is a short code for callers (audit, HTTP answers). The auto seals are in
``shared.seal_kms``; ``python -m shared.seal migrate`` in ``shared.seal_migrate``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.crypto import CLEAR_KEY_FILE, NONCE_BYTES, LocalKms

FORMAT_VERSION = 1
ROOT_KEY_BYTES = 32
MAX_SHARES = 16
CHECK_LABEL = b"coffer-seal-check"
SEAL_TYPES = ("shamir", "awskms", "pkcs11")
#: what the KMS and the HSM bind R's ciphertext to
KMS_CONTEXT = {"coffer": "root-key"}
HSM_AAD = b"coffer-root-key|v1"


class SealFailure(Exception):
    """Base of the two seal failures; ``reason`` is a short code, the message names no secret."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


class SealError(SealFailure, ValueError):
    """A wrong or malformed share, a wrong key or PIN, a damaged file: trying again won't help.

    A ``ValueError`` too, so that ``LocalKms.load`` reports a sealed file it can't open as it
    reports a damaged clear one (``EncryptionError``).
    """


class SealUnavailable(SealFailure):
    """The HSM or KMS can't be reached or refuses for now: stay sealed and try again with backoff."""


def _b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _b64d(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise SealError(f"sealed keyring damaged: {what} is not base64", reason="corrupted")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"sealed keyring damaged: {what} is not base64", reason="corrupted") from None


def _aad(seal_type: str) -> bytes:
    return f"coffer-sealed-keyring|v{FORMAT_VERSION}|{seal_type}".encode()


def root_check(root_key: bytes) -> bytes:
    """HMAC-SHA256(R, "coffer-seal-check"): lets a wrong R be told from a damaged file."""
    return hmac.new(root_key, CHECK_LABEL, hashlib.sha256).digest()


def new_root_key() -> bytes:
    return secrets.token_bytes(ROOT_KEY_BYTES)


# --- the sealed keyring file ------------------------------------------------------------------------------


def _encode(root_key: bytes, record: Mapping[str, Any], keys: Mapping[str, bytes], active: str) -> bytes:
    if len(root_key) != ROOT_KEY_BYTES:
        raise SealError("a root key is 32 bytes", reason="bad_root_key")
    seal_type = str(record.get("type"))
    if seal_type not in SEAL_TYPES:
        raise SealError(f"unknown seal type {seal_type!r}", reason="bad_seal_type")
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(root_key).encrypt(nonce, CLEAR_KEY_FILE.dump(keys, active), _aad(seal_type))
    doc = {"version": FORMAT_VERSION, "seal": dict(record), "nonce": _b64e(nonce),
           "ciphertext": _b64e(ciphertext), "check": _b64e(root_check(root_key))}
    return json.dumps(doc, indent=1).encode()


@dataclass(frozen=True)
class SealedKeyring:
    """A sealed keyring file as read, before R is known: the seal's record and the ciphertext."""

    path: Path
    record: Mapping[str, Any]
    nonce: bytes
    ciphertext: bytes
    check: bytes

    @property
    def seal_type(self) -> str:
        return str(self.record["type"])

    @classmethod
    def parse(cls, path: Path, data: bytes) -> SealedKeyring:
        try:
            doc = json.loads(data)
        except ValueError:
            raise SealError("sealed keyring damaged: not JSON", reason="corrupted") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("seal"), dict):
            raise SealError("sealed keyring damaged: no seal record", reason="corrupted")
        if doc.get("version") != FORMAT_VERSION:
            raise SealError(f"sealed keyring of an unknown version {doc.get('version')!r}", reason="bad_version")
        if doc["seal"].get("type") not in SEAL_TYPES:
            raise SealError("sealed keyring damaged: unknown seal type", reason="corrupted")
        nonce, check = _b64d(doc.get("nonce"), "nonce"), _b64d(doc.get("check"), "check")
        if len(nonce) != NONCE_BYTES or len(check) != hashlib.sha256().digest_size:
            raise SealError("sealed keyring damaged: bad nonce or check", reason="corrupted")
        return cls(Path(path), doc["seal"], nonce, _b64d(doc.get("ciphertext"), "ciphertext"), check)

    @classmethod
    def read(cls, path: Path) -> SealedKeyring:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SealError(f"no sealed keyring at {path}", reason="not_found") from None
        except OSError as exc:
            raise SealError(f"sealed keyring unreadable at {path}: {type(exc).__name__}", reason="unreadable") from None
        return cls.parse(path, data)

    @staticmethod
    def write(path: Path, root_key: bytes, record: Mapping[str, Any], keys: Mapping[str, bytes], active: str, *,
              replace: bool) -> None:
        """0600, atomically (temp file + rename; ``replace=False`` links and refuses an existing file)."""
        path = Path(path)
        if not replace and path.exists():
            raise SealError(f"{path} exists already", reason="exists")
        LocalKms._write(path, _encode(root_key, record, keys, active), replace=replace)
        if not replace and not SealedKeyring.read(path).verify(root_key):  # another process made it first
            raise SealError(f"{path} exists already", reason="exists")

    def verify(self, root_key: bytes) -> bool:
        """Whether ``root_key`` is this keyring's R (constant-time)."""
        return len(root_key) == ROOT_KEY_BYTES and hmac.compare_digest(root_check(root_key), self.check)

    def open(self, root_key: bytes) -> tuple[dict[str, bytes], str]:
        """The keyring ``(keys, active)``; ``SealError`` for a wrong R or a damaged file."""
        if not self.verify(root_key):
            raise SealError("the root key does not open this keyring", reason="wrong_root_key")
        try:
            plain = AESGCM(root_key).decrypt(self.nonce, self.ciphertext, _aad(self.seal_type))
        except (InvalidTag, ValueError):
            raise SealError("sealed keyring damaged: the ciphertext does not authenticate",
                            reason="corrupted") from None
        try:
            return CLEAR_KEY_FILE.parse(plain)
        except (ValueError, KeyError, TypeError):
            raise SealError("sealed keyring damaged: the keyring inside is inconsistent", reason="corrupted") from None


@dataclass
class SealedStore:
    """``shared.crypto.KeyringStore`` of a sealed keyring: ``LocalKms`` runs on it with R in memory.

    ``parse`` checks R first (a file rewritten under another root key is ``SealError``, which
    ``LocalKms`` reports as ``EncryptionError``); ``dump`` re-encrypts under R with the seal record
    last read, so a KEK rotation keeps the seal as it is.
    """

    root_key: bytes = field(repr=False)
    record: Mapping[str, Any]

    def dump(self, keys: Mapping[str, bytes], active: str) -> bytes:
        return _encode(self.root_key, self.record, keys, active)

    def parse(self, data: bytes) -> tuple[dict[str, bytes], str]:
        sealed = SealedKeyring.parse(Path("-"), data)
        keys, active = sealed.open(self.root_key)
        self.record = sealed.record
        return keys, active


def open_local_kms(path: Path, root_key: bytes) -> LocalKms:
    """A ``LocalKms`` on the sealed keyring at ``path``, opened with R (``SealError`` if R is wrong)."""
    sealed = SealedKeyring.read(path)
    sealed.open(root_key)  # a wrong R or a damaged file is SealError here, not EncryptionError
    return LocalKms.load(path, store=SealedStore(root_key, sealed.record))


# --- seals -----------------------------------------------------------------------------------------------


class Seal(Protocol):
    """Makes a new R and the record that gets it back; auto seals (awskms, pkcs11) also ``unseal``."""

    type: str

    async def init(self) -> tuple[bytes, dict[str, Any], list[str] | None]: ...


class AutoSeal(Seal, Protocol):
    async def unseal(self, record: Mapping[str, Any]) -> bytes: ...


# shamir


SHARE_VERSION = 1
SPLIT_ID_BYTES = 4
_SHARE_BYTES = 1 + SPLIT_ID_BYTES + 1 + 16 + 16


def _share_digest(raw: bytes) -> str:
    return hashlib.sha256(b"coffer-shamir-share|" + raw).hexdigest()


def _check_counts(shares: int, threshold: int) -> None:
    if not (isinstance(shares, int) and isinstance(threshold, int) and 1 <= threshold <= shares <= MAX_SHARES):
        raise SealError(f"shares and threshold must satisfy 1 <= threshold <= shares <= {MAX_SHARES}",
                        reason="invalid_parameters")


@dataclass
class ShamirSeal:
    """R split into ``shares`` shares, any ``threshold`` of which give it back.

    A share is base64 of ``version (1) | split id (4) | index (1) | y1 (16) | y2 (16)``: y1 and y2
    are the values at ``index`` of two independent random polynomials over GF(2^128) whose constant
    terms are R's halves (pycryptodome's ``Shamir``). The split id tells a share of another split
    at once. The record keeps, per index, SHA-256 of the share: a wrong or mistyped share is refused
    when it is given, so it can never spoil the shares given before it.
    """

    shares: int = 5
    threshold: int = 3
    type: str = "shamir"

    def __post_init__(self) -> None:
        _check_counts(self.shares, self.threshold)

    async def init(self) -> tuple[bytes, dict[str, Any], list[str] | None]:
        root_key = new_root_key()
        record, shares = self.split(root_key)
        return root_key, record, shares

    def split(self, root_key: bytes) -> tuple[dict[str, Any], list[str]]:
        from Crypto.Protocol.SecretSharing import Shamir

        split_id = secrets.token_bytes(SPLIT_ID_BYTES)
        low = Shamir.split(self.threshold, self.shares, root_key[:16])
        high = Shamir.split(self.threshold, self.shares, root_key[16:])
        raws = []
        for (i, y1), (j, y2) in zip(low, high, strict=True):
            assert i == j  # pycryptodome evaluates both polynomials at 1..n
            raws.append(bytes([SHARE_VERSION]) + split_id + bytes([i]) + y1 + y2)
        record = {"type": self.type, "secret_shares": self.shares, "secret_threshold": self.threshold,
                  "split_id": split_id.hex(), "share_digests": {str(raw[5]): _share_digest(raw) for raw in raws}}
        return record, [_b64e(raw) for raw in raws]


class Unsealer:
    """Gathers shamir shares until ``threshold`` of them give R back.

    ``add`` refuses (``SealError``, nothing already given is lost) a malformed share, a share of
    another split, a share whose digest isn't the record's (a wrong or mistyped one) and a repeated
    one. When the threshold is reached the shares are combined and R is checked against the
    keyring's ``check``; should that fail (only a tampered record can make it: every share was
    checked against its digest), the last share is refused and the ones before it are kept, as
    for any other refused share, and ``failures`` counts it. Vault resets the progress there; we
    don't, because ``sys/unseal`` takes no token: a reset anybody can trigger with one bad share
    would let anybody undo the key holders' work. ``reset()`` discards the shares on purpose.
    """

    def __init__(self, sealed: SealedKeyring) -> None:
        record = sealed.record
        if record.get("type") != "shamir":
            raise SealError("this keyring is not sealed with shamir", reason="bad_seal_type")
        try:
            self.threshold = int(record["secret_threshold"])
            self.shares = int(record["secret_shares"])
            self._split_id = bytes.fromhex(record["split_id"])
            self._digests = {int(k): str(v) for k, v in record["share_digests"].items()}
            _check_counts(self.shares, self.threshold)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise SealError("sealed keyring damaged: bad shamir record", reason="corrupted") from None
        self._sealed = sealed
        self._given: dict[int, bytes] = {}
        self.failures = 0
        self.root_key: bytes | None = None

    @property
    def progress(self) -> int:
        return len(self._given)

    @property
    def sealed(self) -> bool:
        return self.root_key is None

    def reset(self) -> None:
        """Forget the shares given so far (R, once found, stays)."""
        self._given.clear()

    def _decode(self, share: str) -> tuple[int, bytes]:
        if not isinstance(share, str):
            raise SealError("a share is a base64 string", reason="malformed_share")
        try:
            raw = base64.b64decode("".join(share.split()), validate=True)
        except (binascii.Error, ValueError):
            raise SealError("the share is not base64", reason="malformed_share") from None
        if len(raw) != _SHARE_BYTES or raw[0] != SHARE_VERSION:
            raise SealError("the share is malformed (wrong length or version)", reason="malformed_share")
        index = raw[1 + SPLIT_ID_BYTES]
        if not hmac.compare_digest(raw[1:1 + SPLIT_ID_BYTES], self._split_id):
            raise SealError("the share belongs to another initialisation of the seal", reason="wrong_share")
        if not 1 <= index <= self.shares:
            raise SealError("the share's index is out of range", reason="malformed_share")
        if index in self._given:
            raise SealError(f"share number {index} was given already", reason="repeated_share")
        if not hmac.compare_digest(_share_digest(raw).encode(), self._digests.get(index, "").encode()):
            raise SealError(f"share number {index} is not the one made for this seal", reason="wrong_share")
        return index, raw

    def add(self, share: str) -> tuple[int, int]:
        """Give one share: ``(progress, threshold)``; once unsealed, ``root_key`` is R."""
        if self.root_key is not None:
            return self.threshold, self.threshold
        index, raw = self._decode(share)
        if len(self._given) + 1 < self.threshold:
            self._given[index] = raw
            return self.progress, self.threshold
        from Crypto.Protocol.SecretSharing import Shamir

        chosen = [*self._given.items(), (index, raw)]
        low = Shamir.combine([(i, r[6:22]) for i, r in chosen])
        high = Shamir.combine([(i, r[22:38]) for i, r in chosen])
        if not self._sealed.verify(low + high):
            self.failures += 1
            raise SealError("these shares do not open the keyring: the last one was not counted",
                            reason="wrong_share")
        self.root_key = low + high
        self._given.clear()
        return self.threshold, self.threshold


if __name__ == "__main__":  # python -m shared.seal: the command line of shared.seal_migrate, shared.seal first
    import importlib
    importlib.import_module("shared.seal")
    raise SystemExit(importlib.import_module("shared.seal_migrate").main())
# Names that moved to shared.seal_kms and shared.seal_migrate, still importable from here. Looked up when asked
# (PEP 562), never at import: those modules import this one, so importing them here made a cycle that failed
# whenever one of them was imported first.
_MOVED = {**dict.fromkeys(("AwsKmsSeal", "Pkcs11Seal", "_aws_error"), "shared.seal_kms"),
          **dict.fromkeys(("Migration", "auto_unseal", "initialise", "main", "migrate_to_file", "migrate_to_sealed",
                           "root_key_from_shares", "rotate_root", "share_lines"), "shared.seal_migrate")}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'shared.seal' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
