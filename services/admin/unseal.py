"""The seal of a backup's root keyring, opened before a restore writes anything.

A backup holds the root keyring file as the installation had it: ``kms.key`` (the ``file`` seal: it opens
by itself) or ``keyring.sealed`` (it opens only with what no backup holds: the shamir shares, read on
standard input as ``recover-admin`` reads them; the KMS or the HSM the target's settings name). A restore
opens it from the backup's bytes first: if the seal does not open, nothing is restored — a restore that
could not then destroy a deleted tenant's keys, nor read a secret back, must not have begun.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.admin.bundle import BackupRefused
from shared.config import Settings
from shared.crypto import CLEAR_KEY_FILE, LocalKms
from shared.custody import CustodyRefused
from shared.custody_start import auto_seal_of
from shared.seal import SealedKeyring, SealFailure, open_local_kms
from shared.seal_migrate import root_key_from_shares


@dataclass(frozen=True)
class RootKey:
    """What opens the restored root keyring: nothing more for ``file``, R for the other seals."""

    seal: str
    root_key: bytes | None = field(default=None, repr=False)

    def open(self, path: Path) -> LocalKms:
        """The root keyring written at ``path``, opened (as the platform will open it)."""
        if self.root_key is None:
            return LocalKms.load(path, create=False)
        return open_local_kms(path, self.root_key)


async def unseal(settings: Settings, data: bytes, stdin: Any = None) -> RootKey:
    """Open the backup's root keyring ``data`` with the target's seal; ``BackupRefused`` if it does not."""
    if settings.seal == "file":
        try:
            CLEAR_KEY_FILE.parse(data)
        except (ValueError, KeyError, TypeError):
            raise BackupRefused("the backup's key file (file seal) is damaged: nothing was restored") from None
        return RootKey("file")
    try:
        sealed = SealedKeyring.parse(Path("backup"), data)
        if sealed.seal_type != settings.seal:
            raise BackupRefused(f"the backup's keyring is sealed with {sealed.seal_type}, not {settings.seal}")
        if sealed.seal_type == "shamir":
            root_key = root_key_from_shares(sealed, stdin if stdin is not None else sys.stdin)
        else:
            root_key = await auto_seal_of(settings).unseal(sealed.record)
        sealed.open(root_key)  # a wrong R (another split, another KMS key) is SealError here
    except SealFailure as exc:
        raise BackupRefused(f"the seal does not open the backup's keyring ({exc.reason}): {exc.message}; "
                            "nothing was restored") from None
    except CustodyRefused as exc:  # a setting the auto seal needs is missing
        raise BackupRefused(f"{exc.code}; nothing was restored") from None
    return RootKey(settings.seal, bytes(root_key))
