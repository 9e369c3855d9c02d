"""The auto seals (issue #29): R encrypted by an AWS KMS key (``AwsKmsSeal``) or by a key inside an HSM
(``Pkcs11Seal``). ``shared.seal`` re-exports both."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from shared.crypto import NONCE_BYTES
from shared.seal import (
    HSM_AAD,
    KMS_CONTEXT,
    ROOT_KEY_BYTES,
    SealError,
    SealFailure,
    SealUnavailable,
    _b64d,
    _b64e,
    new_root_key,
)


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
