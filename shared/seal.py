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
is a short code for callers (audit, HTTP answers).

``python -m shared.seal migrate --to shamir|awskms|pkcs11|file`` moves an
installation between the clear key file and a sealed keyring (see ``main``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import getpass
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
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


# awskms


def _aws_error(exc: BaseException) -> SealFailure:
    """Map botocore's errors: a KMS that is away or refuses for now vs a wrong key or ciphertext."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        if code in ("InvalidCiphertextException", "IncorrectKeyException", "NotFoundException",
                    "InvalidKeyUsageException", "ValidationException"):
            return SealError(f"the KMS refused to decrypt the root key ({code})", reason="kms_refused")
        # DisabledException, KMSInvalidStateException, AccessDenied, throttling, internal errors: all may pass
        return SealUnavailable(f"the KMS is not available for the root key ({code})", reason="kms_unavailable")
    # BotoCoreError (no endpoint, timeouts, no credentials), OSError, aiohttp's errors
    return SealUnavailable(f"the KMS can't be reached ({type(exc).__name__})", reason="kms_unreachable")


@dataclass
class AwsKmsSeal:
    """R encrypted by the KMS key ``key_id`` (aiobotocore; credentials from the usual AWS chain).

    ``key_id`` and ``region`` say where ``init`` seals R; ``unseal`` uses the record's (the key that did
    seal it), with ``endpoint_url`` and the credentials of the configuration.

    Short timeouts and two attempts: the caller keeps a sealed process and retries with its own
    backoff, it does not hang in botocore's.
    """

    key_id: str | None = None
    region: str = "us-east-1"
    endpoint_url: str | None = None
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    type: str = "awskms"

    def _client(self, region: str | None = None) -> Any:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(connect_timeout=self.connect_timeout, read_timeout=self.read_timeout,
                           retries={"max_attempts": 2, "mode": "standard"})
        return get_session().create_client("kms", region_name=region or self.region, endpoint_url=self.endpoint_url,
                                           config=config)

    async def init(self) -> tuple[bytes, dict[str, Any], list[str] | None]:
        if not self.key_id:
            raise SealError("awskms needs a key id", reason="invalid_parameters")
        root_key = new_root_key()
        try:
            async with self._client() as kms:
                answer = await kms.encrypt(KeyId=self.key_id, Plaintext=root_key, EncryptionContext=KMS_CONTEXT)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped, none carries R
            raise _aws_error(exc) from None
        record = {"type": self.type, "key_id": str(answer.get("KeyId") or self.key_id), "region": self.region,
                  "ciphertext_blob": _b64e(answer["CiphertextBlob"])}
        return root_key, record, None

    @staticmethod
    async def _check_state(kms: Any, key_id: str) -> None:
        """A key that is not Enabled (Disabled, PendingDeletion, ...) is ``SealUnavailable`` with its state.

        AWS's Decrypt refuses such a key by itself (DisabledException, KMSInvalidStateException, mapped the
        same way); DescribeKey (in the default key policy's key-user statement) names the state for health
        and logs, and makes emulators that don't enforce key states (moto) behave as AWS does. A principal
        that may not DescribeKey goes straight to Decrypt.
        """
        from botocore.exceptions import ClientError

        try:
            answer = await kms.describe_key(KeyId=key_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("AccessDeniedException", "UnauthorizedOperation"):
                return
            raise
        state = str(answer.get("KeyMetadata", {}).get("KeyState", "Enabled"))
        if state != "Enabled":
            raise SealUnavailable(f"the KMS key for the root key is {state}", reason="kms_unavailable")

    async def unseal(self, record: Mapping[str, Any]) -> bytes:
        if record.get("type") != self.type or not isinstance(record.get("key_id"), str):
            raise SealError("this keyring is not sealed with awskms", reason="bad_seal_type")
        blob = _b64d(record.get("ciphertext_blob"), "ciphertext_blob")
        try:
            async with self._client(str(record.get("region") or self.region)) as kms:
                await self._check_state(kms, record["key_id"])
                answer = await kms.decrypt(CiphertextBlob=blob, KeyId=record["key_id"],
                                           EncryptionContext=KMS_CONTEXT)
        except SealFailure:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _aws_error(exc) from None
        root_key = bytes(answer.get("Plaintext") or b"")
        if len(root_key) != ROOT_KEY_BYTES:
            raise SealError("the KMS gave back something that is not a root key", reason="kms_refused")
        return root_key


# pkcs11


@dataclass
class Pkcs11Seal:
    """R encrypted by an AES-256 key inside an HSM (CKM_AES_GCM, random 96-bit IV, AAD bound).

    ``token_label`` and ``key_label`` say where ``init`` seals R; ``unseal`` uses the record's (the key
    that did seal it), with the configured library and PIN. The key is made on ``init`` when absent: token
    object, private, sensitive, not extractable, encrypt/decrypt only. An existing key that is
    extractable is refused. python-pkcs11 is synchronous: its calls run in a thread.
    """

    library: str
    token_label: str
    key_label: str
    pin: str = field(repr=False)
    type: str = "pkcs11"

    def _reinitialize(self) -> None:
        """C_Finalize + C_Initialize: a library sees the tokens (and an HSM that came back) as of now."""
        import pkcs11
        from pkcs11.exceptions import PKCS11Error

        try:
            pkcs11.lib(self.library).reinitialize()
        except PKCS11Error:
            pass

    def _session(self) -> Any:
        import pkcs11
        from pkcs11.exceptions import NoSuchToken, PinIncorrect, PinInvalid, PinLenRange, PinLocked, PKCS11Error

        try:
            lib = pkcs11.lib(self.library)
        except PKCS11Error:
            raise SealUnavailable(f"the PKCS#11 library {self.library} can't be loaded",
                                  reason="hsm_unavailable") from None
        try:
            try:
                token = lib.get_token(token_label=self.token_label)
            except NoSuchToken:  # a library lists the tokens it found when it was initialised: look again
                lib.reinitialize()
                token = lib.get_token(token_label=self.token_label)
        except NoSuchToken:
            raise SealUnavailable(f"no HSM token labelled {self.token_label!r}", reason="hsm_unavailable") from None
        except PKCS11Error as exc:
            self._reinitialize()
            raise SealUnavailable(f"the HSM can't be reached ({type(exc).__name__})",
                                  reason="hsm_unavailable") from None
        try:
            return token.open(user_pin=self.pin, rw=True)
        except (PinIncorrect, PinInvalid, PinLenRange):
            raise SealError(f"the HSM refused the PIN for token {self.token_label!r}", reason="wrong_pin") from None
        except PinLocked:
            raise SealError(f"the PIN of token {self.token_label!r} is locked", reason="pin_locked") from None
        except PKCS11Error as exc:
            self._reinitialize()  # the next attempt starts afresh (an HSM that went away and came back)
            raise SealUnavailable(f"the HSM can't be reached ({type(exc).__name__})",
                                  reason="hsm_unavailable") from None

    def _find_key(self, session: Any, *, create: bool) -> Any:
        from pkcs11 import Attribute, KeyType, ObjectClass
        from pkcs11.exceptions import MultipleObjectsReturned, NoSuchKey

        try:
            key = session.get_key(label=self.key_label, key_type=KeyType.AES, object_class=ObjectClass.SECRET_KEY)
        except NoSuchKey:
            if not create:
                raise SealError(f"no key labelled {self.key_label!r} on the HSM token", reason="hsm_key_missing") \
                    from None
            return session.generate_key(KeyType.AES, 256, label=self.key_label, store=True, template={
                Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False, Attribute.ENCRYPT: True, Attribute.DECRYPT: True,
                Attribute.WRAP: False, Attribute.UNWRAP: False})
        except MultipleObjectsReturned:
            raise SealError(f"several keys are labelled {self.key_label!r} on the HSM token",
                            reason="hsm_key_ambiguous") from None
        if key[Attribute.EXTRACTABLE] or not key[Attribute.SENSITIVE]:
            raise SealError(f"the HSM key {self.key_label!r} is extractable or not sensitive: refused",
                            reason="hsm_key_extractable")
        return key

    def _init_sync(self) -> tuple[bytes, dict[str, Any], list[str] | None]:
        from pkcs11 import Mechanism
        from pkcs11.exceptions import PKCS11Error
        from pkcs11.mechanisms import GCMParams

        root_key, iv = new_root_key(), secrets.token_bytes(NONCE_BYTES)
        try:
            with self._session() as session:
                key = self._find_key(session, create=True)
                wrapped = key.encrypt(root_key, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, HSM_AAD))
        except PKCS11Error as exc:
            self._reinitialize()  # the next attempt starts afresh (an HSM that went away and came back)
            raise SealUnavailable(f"the HSM failed ({type(exc).__name__})", reason="hsm_unavailable") from None
        record = {"type": self.type, "token_label": self.token_label, "key_label": self.key_label,
                  "mechanism": "CKM_AES_GCM", "iv": _b64e(iv), "wrapped": _b64e(bytes(wrapped))}
        return root_key, record, None

    def _unseal_sync(self, record: Mapping[str, Any]) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.exceptions import EncryptedDataInvalid, EncryptedDataLenRange, GeneralError, PKCS11Error
        from pkcs11.mechanisms import GCMParams

        if record.get("type") != self.type or record.get("mechanism") != "CKM_AES_GCM":
            raise SealError("this keyring is not sealed with pkcs11 (CKM_AES_GCM)", reason="bad_seal_type")
        iv, wrapped = _b64d(record.get("iv"), "iv"), _b64d(record.get("wrapped"), "wrapped")
        if not (isinstance(record.get("token_label"), str) and isinstance(record.get("key_label"), str)):
            raise SealError("sealed keyring damaged: bad pkcs11 record", reason="corrupted")
        sealer = replace(self, token_label=record["token_label"], key_label=record["key_label"])
        try:
            with sealer._session() as session:
                key = sealer._find_key(session, create=False)
                try:
                    root_key = bytes(key.decrypt(wrapped, mechanism=Mechanism.AES_GCM,
                                                 mechanism_param=GCMParams(iv, HSM_AAD)))
                except (EncryptedDataInvalid, EncryptedDataLenRange, GeneralError):
                    # SoftHSM2 answers a GCM tag mismatch with CKR_GENERAL_ERROR
                    raise SealError("the HSM key does not open the root key", reason="hsm_refused") from None
        except PKCS11Error as exc:
            self._reinitialize()  # the next attempt starts afresh (an HSM that went away and came back)
            raise SealUnavailable(f"the HSM failed ({type(exc).__name__})", reason="hsm_unavailable") from None
        if len(root_key) != ROOT_KEY_BYTES:
            raise SealError("the HSM gave back something that is not a root key", reason="hsm_refused")
        return root_key

    async def init(self) -> tuple[bytes, dict[str, Any], list[str] | None]:
        return await asyncio.to_thread(self._init_sync)

    async def unseal(self, record: Mapping[str, Any]) -> bytes:
        return await asyncio.to_thread(self._unseal_sync, record)


# --- what the later wiring and the CLI call ---------------------------------------------------------------


async def auto_unseal(path: Path, seal: AutoSeal) -> tuple[bytes, LocalKms]:
    """R from an auto seal (awskms, pkcs11), checked, and a ``LocalKms`` on the sealed keyring."""
    sealed = SealedKeyring.read(path)
    if sealed.seal_type != seal.type:
        raise SealError(f"the keyring is sealed with {sealed.seal_type}, not {seal.type}", reason="bad_seal_type")
    root_key = await seal.unseal(sealed.record)
    if not sealed.verify(root_key):
        raise SealError("the root key from the seal does not open this keyring", reason="wrong_root_key")
    return root_key, open_local_kms(path, root_key)


async def initialise(path: Path, seal: Seal) -> tuple[bytes, list[str] | None]:
    """A new installation's sealed keyring: a new R and a first KEK (``SealError`` if one exists)."""
    root_key, record, shares = await seal.init()
    kek_id = "kek_" + secrets.token_hex(8)
    SealedKeyring.write(path, root_key, record, {kek_id: secrets.token_bytes(ROOT_KEY_BYTES)}, kek_id,
                        replace=False)
    return root_key, shares


async def rotate_root(path: Path, root_key: bytes, seal: Seal) -> tuple[bytes, list[str] | None]:
    """``sys/rotate-root``: a new R from ``seal`` (the same type or another), the same keyring under it.

    The keyring file is replaced atomically; the caller holds the lock it takes for KEK rotations
    (a KEK rotation written under the old R at the same moment would undo this one), and every
    process holding the old R must be given the new one (auto seals: unseal again).
    """
    keys, active = SealedKeyring.read(path).open(root_key)
    new_key, record, shares = await seal.init()
    SealedKeyring.write(path, new_key, record, keys, active, replace=True)
    if SealedKeyring.read(path).open(new_key) != (keys, active):
        raise SealError("the re-sealed keyring does not read back", reason="corrupted")
    return new_key, shares


def _destroy(path: Path) -> None:
    """Overwrite then unlink (best effort: a journalling file system or an SSD may keep old blocks)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()


def _set_aside(path: Path) -> Path:
    aside = path.with_name(f"{path.name}.migrated-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    os.replace(path, aside)
    return aside


@dataclass
class Migration:
    """What a migration did: the file written, what became of the old one, the shares (shamir)."""

    written: Path
    old: Path
    old_kept_as: Path | None
    kek_ids: tuple[str, ...]
    shares: list[str] | None = field(default=None, repr=False)
    root_key: bytes | None = field(default=None, repr=False)


async def migrate_to_sealed(key_file: Path, sealed_file: Path, seal: Seal, *, keep_old: bool = False,
                            deliver: Callable[[list[str] | None], None] | None = None) -> Migration:
    """``file`` → a seal: read the clear key file, write the sealed keyring, check it opens, hand the
    shares to ``deliver`` (shamir), then remove the clear file (overwritten, unlinked) — or, with
    ``keep_old``, rename it aside. Should ``deliver`` fail (a full disk, a closed pipe), the sealed file
    is removed and the clear one kept: shares nobody received must not be the only way in. Run it with
    the platform stopped."""
    key_file, sealed_file = Path(key_file), Path(sealed_file)
    kms = LocalKms.load(key_file)  # EncryptionError if absent or damaged
    keys, active = dict(kms._keys), kms._active
    root_key, record, shares = await seal.init()
    SealedKeyring.write(sealed_file, root_key, record, keys, active, replace=False)
    if SealedKeyring.read(sealed_file).open(root_key) != (keys, active):
        sealed_file.unlink()
        raise SealError("the sealed keyring does not read back: nothing changed", reason="corrupted")
    if deliver is not None:
        try:
            deliver(shares)
        except BaseException:
            sealed_file.unlink()
            raise
    aside = _set_aside(key_file) if keep_old else None
    if aside is None:
        _destroy(key_file)
    return Migration(sealed_file, key_file, aside, tuple(keys), shares, root_key)


async def migrate_to_file(sealed_file: Path, key_file: Path, root_key: bytes, *, keep_old: bool = False) -> Migration:
    """A seal → ``file`` (recovery): the keyring back in a clear key file (refused if one exists),
    checked, then the sealed file removed — or renamed aside with ``keep_old``."""
    sealed_file, key_file = Path(sealed_file), Path(key_file)
    keys, active = SealedKeyring.read(sealed_file).open(root_key)
    if key_file.exists():
        raise SealError(f"{key_file} exists already", reason="exists")
    LocalKms._write(key_file, CLEAR_KEY_FILE.dump(keys, active), replace=False)
    back = LocalKms.load(key_file)
    if (back._keys, back._active) != (keys, active):
        raise SealError("the key file does not read back: the sealed keyring is left in place", reason="corrupted")
    aside = _set_aside(sealed_file) if keep_old else None
    if aside is None:
        sealed_file.unlink()
    return Migration(key_file, sealed_file, aside, tuple(keys))


# --- the command line -------------------------------------------------------------------------------------


def _default_key_file() -> Path:
    if os.environ.get("COFFER_KMS_KEY_FILE"):
        return Path(os.environ["COFFER_KMS_KEY_FILE"])
    return Path(os.environ.get("COFFER_DATA_DIR", ".coffer")) / "kms.key"


def _pin(args: argparse.Namespace) -> str:
    if args.pkcs11_pin_file:
        return Path(args.pkcs11_pin_file).read_text().strip()
    pin = os.environ.get("COFFER_PKCS11_PIN")
    if not pin:
        raise SealError("the HSM PIN: --pkcs11-pin-file or COFFER_PKCS11_PIN", reason="invalid_parameters")
    return pin


def _seal_from_args(kind: str, args: argparse.Namespace) -> Seal:
    if kind == "shamir":
        return ShamirSeal(args.shares, args.threshold)
    if kind == "awskms":
        return AwsKmsSeal(args.kms_key_id, args.aws_region, args.aws_endpoint_url)
    if kind == "pkcs11":
        if args.to == "file":  # the record names the token and the key; the library and the PIN are needed
            return Pkcs11Seal(args.pkcs11_library, args.pkcs11_token or "", args.pkcs11_key or "", _pin(args))
        if not (args.pkcs11_token and args.pkcs11_key):
            raise SealError("pkcs11 needs --pkcs11-token and --pkcs11-key", reason="invalid_parameters")
        return Pkcs11Seal(args.pkcs11_library, args.pkcs11_token, args.pkcs11_key, _pin(args))
    raise SealError(f"unknown seal {kind!r}", reason="invalid_parameters")


def share_lines(stdin: Any) -> Iterator[str]:
    """Shares from standard input, one a line; from a terminal without echo (getpass)."""
    if stdin is sys.stdin and sys.stdin.isatty():
        while line := getpass.getpass("share (empty to stop): "):
            yield line
        return
    yield from stdin


def root_key_from_shares(sealed: SealedKeyring, stdin: Any) -> bytes:
    """R from shamir shares read one a line from ``stdin`` (a terminal without echo), saying on stderr what
    became of each (never the share); ``SealError`` when they run out before the threshold."""
    unsealer = Unsealer(sealed)
    print(f"shamir: give {unsealer.threshold} of the {unsealer.shares} shares on standard input, "
          "one a line", file=sys.stderr)
    for line in share_lines(stdin):
        if not line.strip():
            continue
        try:
            progress, threshold = unsealer.add(line.strip())
        except SealError as exc:
            print(f"share refused: {exc.message}", file=sys.stderr)
            continue
        print(f"share accepted ({progress}/{threshold})", file=sys.stderr)
        if unsealer.root_key is not None:
            return unsealer.root_key
    raise SealError("not enough shares given", reason="not_enough_shares")


async def _root_key_from(sealed: SealedKeyring, args: argparse.Namespace, stdin: Any) -> bytes:
    if sealed.seal_type == "shamir":
        return root_key_from_shares(sealed, stdin)
    seal = _seal_from_args(sealed.seal_type, args)
    assert isinstance(seal, AwsKmsSeal | Pkcs11Seal)
    root_key = await seal.unseal(sealed.record)
    if not sealed.verify(root_key):
        raise SealError("the root key from the seal does not open this keyring", reason="wrong_root_key")
    return bytes(root_key)


async def _migrate(args: argparse.Namespace, stdin: Any) -> None:
    key_file = Path(args.key_file) if args.key_file else _default_key_file()
    sealed_file = Path(args.sealed_file) if args.sealed_file else key_file.with_name("keyring.sealed")
    if args.to == "file":
        root_key = await _root_key_from(SealedKeyring.read(sealed_file), args, stdin)
        done = await migrate_to_file(sealed_file, key_file, root_key, keep_old=args.keep_old)
        print(f"moved the keyring ({len(done.kek_ids)} KEKs) from the sealed file {sealed_file} "
              f"to the clear key file {key_file} (0600): seal 'file'")
    else:
        def deliver(shares: list[str] | None) -> None:  # before the clear key file goes: a failure keeps it
            if shares:
                print(f"unseal shares ({args.threshold} of {args.shares} open the keyring); shown once, now:")
                for share in shares:
                    print(share)
            sys.stdout.flush()

        done = await migrate_to_sealed(key_file, sealed_file, _seal_from_args(args.to, args), keep_old=args.keep_old,
                                       deliver=deliver)
        print(f"sealed the keyring ({len(done.kek_ids)} KEKs) of {key_file} with {args.to} into {sealed_file} "
              "(0600), and checked that it opens")
    if done.old_kept_as is not None:
        print(f"kept the old file as {done.old_kept_as}"
              + (": it opens every secret, move it somewhere safe or destroy it" if args.to != "file" else ""))
    else:
        print(f"removed {done.old}" + (" (overwritten, then unlinked)" if args.to != "file" else ""))


def main(argv: Sequence[str] | None = None, stdin: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.seal", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrate", help="move the keyring between the clear key file and a seal "
                                         "(with the platform stopped)")
    mig.add_argument("--to", required=True, choices=["shamir", "awskms", "pkcs11", "file"])
    mig.add_argument("--key-file", help="the clear key file (default: COFFER_KMS_KEY_FILE or <data dir>/kms.key)")
    mig.add_argument("--sealed-file", help="the sealed keyring (default: keyring.sealed beside the key file)")
    mig.add_argument("--keep-old", action="store_true",
                     help="rename the old file aside instead of removing it (for file: it opens every secret)")
    mig.add_argument("--shares", type=int, default=5)
    mig.add_argument("--threshold", type=int, default=3)
    mig.add_argument("--kms-key-id")
    mig.add_argument("--aws-region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    mig.add_argument("--aws-endpoint-url")
    mig.add_argument("--pkcs11-library", default="/usr/lib/softhsm/libsofthsm2.so")
    mig.add_argument("--pkcs11-token")
    mig.add_argument("--pkcs11-key")
    mig.add_argument("--pkcs11-pin-file", help="a file holding the PIN (else COFFER_PKCS11_PIN)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_migrate(args, stdin if stdin is not None else sys.stdin))
    except SealUnavailable as exc:
        print(f"seal unavailable: {exc.message}", file=sys.stderr)
        return 3
    except SealError as exc:
        print(f"seal error: {exc.message}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - EncryptionError and OSError: a message, never a traceback of keys
        print(f"error: {getattr(exc, 'message', None) or type(exc).__name__}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
