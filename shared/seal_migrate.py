"""What the wiring and the command line do with seals (issue #29): auto-unseal, the first sealed keyring,
a new root key, and ``python -m shared.seal migrate`` between the clear key file and a seal. ``shared.seal``
re-exports it all."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.crypto import CLEAR_KEY_FILE, LocalKms
from shared.seal import (
    ROOT_KEY_BYTES,
    AutoSeal,
    Seal,
    SealedKeyring,
    SealError,
    SealUnavailable,
    ShamirSeal,
    Unsealer,
    open_local_kms,
)
from shared.seal_kms import AwsKmsSeal, Pkcs11Seal

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
    parser = argparse.ArgumentParser(prog="python -m shared.seal",
                                     description="Seals: what protects the root key R behind the keyring (issue #29, "
                                                 "api.md §11).")
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
