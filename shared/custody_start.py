"""Before a process's seal opens (issue #29): the auto seal its settings name, the starts refused because
they would lose or ignore keys (``check``), the keys for an operator's tool. ``shared.custody`` re-exports them."""

from __future__ import annotations

import sys
from typing import Any

from shared.config import Settings
from shared.crypto import LocalKms
from shared.custody import MIGRATE, CustodyRefused
from shared.seal import (
    AutoSeal,
    SealedKeyring,
    SealError,
    SealFailure,
    open_local_kms,
)
from shared.seal_kms import AwsKmsSeal, Pkcs11Seal
from shared.seal_migrate import auto_unseal, root_key_from_shares


def _pin(settings: Settings) -> str:
    if settings.pkcs11_pin_file is not None:
        try:
            return settings.pkcs11_pin_file.read_text().strip()
        except OSError as exc:
            raise CustodyRefused(f"coffer: COFFER_PKCS11_PIN_FILE {settings.pkcs11_pin_file} can't be read "
                                 f"({type(exc).__name__})") from None
    if settings.pkcs11_pin is not None:
        return settings.pkcs11_pin.get_secret_value()
    raise CustodyRefused("coffer: COFFER_SEAL=pkcs11 needs COFFER_PKCS11_PIN or COFFER_PKCS11_PIN_FILE")


def auto_seal_of(settings: Settings) -> AutoSeal:
    """The auto seal the settings describe (``CustodyRefused`` naming what is missing)."""
    if settings.seal == "awskms":
        return AwsKmsSeal(settings.awskms_key_id, settings.awskms_region, settings.awskms_endpoint_url)
    if settings.seal == "pkcs11":
        missing = [name for name, value in (("COFFER_PKCS11_LIBRARY", settings.pkcs11_library),
                                            ("COFFER_PKCS11_TOKEN", settings.pkcs11_token),
                                            ("COFFER_PKCS11_KEY", settings.pkcs11_key)) if not value]
        if missing:
            raise CustodyRefused(f"coffer: COFFER_SEAL=pkcs11 needs {', '.join(missing)}")
        assert settings.pkcs11_library and settings.pkcs11_token and settings.pkcs11_key
        return Pkcs11Seal(settings.pkcs11_library, settings.pkcs11_token, settings.pkcs11_key, _pin(settings))
    raise ValueError(f"{settings.seal} is not an auto seal")


def check(settings: Settings, *, distributed: bool = False) -> None:
    """Refuse (``CustodyRefused``) a start that would lose or ignore keys; nothing else happens."""
    seal, key_file, sealed_file = settings.seal, settings.key_file, settings.sealed_keyring_file
    if seal == "file":
        if sealed_file.exists() and not key_file.exists():
            raise CustodyRefused(
                f"coffer: a sealed keyring is at {sealed_file} but COFFER_SEAL is 'file': set COFFER_SEAL to its "
                f"seal, or move it back to a key file with `{MIGRATE} --to file --sealed-file {sealed_file}` "
                "(platform stopped)")
        return
    if key_file.exists():
        raise CustodyRefused(
            f"coffer: COFFER_SEAL={seal} but the clear key file {key_file} is there: move it into the seal with "
            f"`{MIGRATE} --to {seal} --key-file {key_file} --sealed-file {sealed_file}` (platform stopped), "
            "or set COFFER_SEAL=file")
    if sealed_file.exists():
        try:
            kind = SealedKeyring.read(sealed_file).seal_type
        except SealError as exc:
            raise CustodyRefused(f"coffer: {exc.message}") from None
        if kind != seal:
            raise CustodyRefused(f"coffer: the keyring at {sealed_file} is sealed with {kind}, not {seal}: "
                                 f"set COFFER_SEAL={kind}")
    if seal == "awskms" and not sealed_file.exists() and not settings.awskms_key_id:
        raise CustodyRefused("coffer: COFFER_SEAL=awskms needs COFFER_AWSKMS_KEY_ID to make the sealed keyring")
    if seal in ("awskms", "pkcs11"):
        auto_seal_of(settings)  # names a missing setting now, not at the first retry


async def open_for_tool(settings: Settings, stdin: Any = None) -> LocalKms:
    """The keys for an operator's tool run beside the platform (``recover-admin``), through the same seal:
    the key file; the KMS or HSM, asked once; or shamir shares read from ``stdin`` (a terminal without
    echo). ``SystemExit`` saying why when they can't be opened; nothing secret in it."""
    if settings.seal == "file":
        return LocalKms.load(settings.key_file, create=False)
    check(settings)
    path = settings.sealed_keyring_file
    if not path.exists():
        raise CustodyRefused(f"coffer: no sealed keyring at {path} (COFFER_SEAL_FILE): nothing to open")
    try:
        if settings.seal != "shamir":
            return (await auto_unseal(path, auto_seal_of(settings)))[1]
        root_key = root_key_from_shares(SealedKeyring.read(path), stdin if stdin is not None else sys.stdin)
        return open_local_kms(path, root_key)
    except SealFailure as exc:
        raise CustodyRefused(f"coffer: the seal did not open ({exc.reason}): {exc.message}") from None


def open_file(settings: Settings) -> LocalKms:
    """The ``file`` seal: the clear key file, made 0600 on first start (as before #29)."""
    return LocalKms.load(settings.key_file, create=True)
