"""The backup file: records in one age stream (pyrage), written and read as a stream.

The plaintext inside the age encryption is::

    MAGIC, then records; a record is  u32 length | JSON header  [ | u32 length | bytes ... | u32 0 ]

A header with ``"stream": true`` is followed by chunks of data up to an empty chunk (a table's COPY
output, a file's bytes: their size is never needed in advance). The last record is ``{"kind": "end"}``.

Why a stream and not a tar in memory: a database is as large as it is, and neither the file nor the
plaintext ever needs to be whole anywhere — pyrage encrypts from one end of a pipe (a thread) while the
backup writes into the other; restoring, pyrage decrypts into a pipe the restore reads. age (STREAM,
64 KiB chunks, each authenticated, the last one marked) refuses any changed or cut byte *where it is*, so
a restore writes what it reads inside one database transaction and commits only once the whole stream
has authenticated (services/admin/load.py). age does not say who made a file: anyone holding a
recipient's public key can make one (docs/operations.md, "Backups").
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import struct
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pyrage

MAGIC = b"COFFER-BACKUP\n1\n"
#: frames of data are gathered up to this many bytes before they go to the pipe
FLUSH_BYTES = 1 << 20
#: a header or a chunk larger than this is not one a backup writes: refused, not allocated (the manifest,
#: with its counts per tenant and table, is the largest header: some 40 bytes per tenant and table)
MAX_HEADER = 1 << 28
MAX_CHUNK = 1 << 24
_U32 = struct.Struct(">I")


class BackupRefused(Exception):
    """A backup or restore refused, with a message for the operator (never a key, a value or a token)."""


def recipients_of(texts: Sequence[str]) -> list[Any]:
    """pyrage recipients: age X25519 (``age1…``) or ``ssh-ed25519`` public keys; a file's lines count too."""
    found = []
    for text in texts:
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        try:
            if text.startswith("age1"):
                found.append(pyrage.x25519.Recipient.from_str(text))
                continue
            if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
                found.append(pyrage.ssh.Recipient.from_str(text))
                continue
        except pyrage.RecipientError:
            pass
        raise BackupRefused(f"not an age recipient (age1…) or an ssh public key: {text[:12]}…")
    if not found:
        raise BackupRefused("no recipient: give --recipient age1… or --recipients-file FILE (as age -r / -R)")
    return found


def identities_of(path: Path) -> list[Any]:
    """pyrage identities from an identity file (as ``age -i``): age secret keys, or an ssh private key."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BackupRefused(f"the identity file {path} can't be read ({type(exc).__name__})") from None
    if b"PRIVATE KEY-----" in data:
        try:
            return [pyrage.ssh.Identity.from_buffer(data)]
        except pyrage.IdentityError:
            raise BackupRefused(f"{path} is not an ssh private key pyrage can use (encrypted keys are not)") from None
    found = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                found.append(pyrage.x25519.Identity.from_str(line))
            except pyrage.IdentityError:
                raise BackupRefused(f"{path} holds a malformed age secret key") from None
    if not found:
        raise BackupRefused(f"{path} holds no age identity (AGE-SECRET-KEY-1…) nor an ssh private key")
    return found


class Writer:
    """Records into ``path`` (made 0600 beside it, renamed into place by ``close``), encrypted as written."""

    def __init__(self, path: Path, recipients: list[Any]) -> None:
        self.path = Path(path)
        self._part = self.path.with_name(f".{self.path.name}.part")
        self._buffer = bytearray(MAGIC)
        self._error: BaseException | None = None
        self.size = 0
        try:
            fd = os.open(self._part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise BackupRefused(f"{self._part} can't be made ({type(exc).__name__}: {exc.strerror})") from None
        out = os.fdopen(fd, "wb")
        read_fd, write_fd = os.pipe()
        self._pipe = os.fdopen(write_fd, "wb", buffering=0)

        def encrypt() -> None:
            try:
                with os.fdopen(read_fd, "rb") as source, out:
                    pyrage.encrypt_io(source, out, recipients)
            except BaseException as exc:  # noqa: BLE001 - said by close()
                self._error = exc

        self._thread = threading.Thread(target=encrypt, name="backup-encrypt", daemon=True)
        self._thread.start()

    async def _flush(self, force: bool = False) -> None:
        if self._buffer and (force or len(self._buffer) >= FLUSH_BYTES):
            data, self._buffer = bytes(self._buffer), bytearray()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._pipe.write, data)
            except BrokenPipeError:
                raise BackupRefused(f"encrypting failed: {type(self._error).__name__}") from None

    async def record(self, kind: str, **header: Any) -> None:
        """A record without data."""
        data = json.dumps({"kind": kind, **header}, sort_keys=True).encode()
        self._buffer += _U32.pack(len(data)) + data
        await self._flush()

    async def chunk(self, data: bytes) -> None:
        """A chunk of the stream of the last record (which has ``stream=True``); ``b""`` ends it."""
        self._buffer += _U32.pack(len(data)) + data
        await self._flush()

    async def stream(self, kind: str, chunks: AsyncIterator[bytes] | None = None, data: bytes = b"",
                     **header: Any) -> None:
        """A record with data: ``data`` at once, or the ``chunks`` as they come."""
        await self.record(kind, stream=True, **header)
        if data:
            await self.chunk(data)
        if chunks is not None:
            async for piece in chunks:
                if piece:
                    await self.chunk(piece)
        await self.chunk(b"")

    async def close(self) -> int:
        """The end record, the stream closed and the file in place; its size."""
        await self.record("end")
        await self._flush(force=True)
        self._pipe.close()
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        if self._error is not None:
            self._part.unlink(missing_ok=True)
            raise BackupRefused(f"encrypting failed: {type(self._error).__name__}")
        if self.path.exists():
            self._part.unlink(missing_ok=True)
            raise BackupRefused(f"{self.path} exists already: nothing was overwritten")
        os.link(self._part, self.path)  # never over an existing file
        self._part.unlink()
        self.size = self.path.stat().st_size
        return self.size

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.close()
        self._thread.join(timeout=10)
        self._part.unlink(missing_ok=True)


class Reader:
    """Records out of ``path`` as pyrage decrypts it; ``finish()`` says whether the whole stream authenticated.

    A wrong identity, a changed byte or a cut file stops the stream where it is found; the record being
    read then fails with ``BackupRefused`` naming which it was.
    """

    def __init__(self, path: Path, identities: list[Any]) -> None:
        self.path = Path(path)
        try:
            source = open(self.path, "rb")  # noqa: SIM115 - the thread owns it
        except OSError as exc:
            raise BackupRefused(f"the backup {path} can't be read ({type(exc).__name__})") from None
        read_fd, write_fd = os.pipe()
        self._pipe = io.BufferedReader(io.FileIO(read_fd, "rb"), buffer_size=1 << 20)
        self._error: BaseException | None = None
        self._buffer = bytearray()
        self._done = False

        def decrypt() -> None:
            try:
                with source, os.fdopen(write_fd, "wb") as sink:
                    pyrage.decrypt_io(source, sink, identities)
            except BaseException as exc:  # noqa: BLE001 - said by the reader
                self._error = exc

        self._thread = threading.Thread(target=decrypt, name="backup-decrypt", daemon=True)
        self._thread.start()

    def _refusal(self) -> BackupRefused:
        self._thread.join(timeout=30)
        error = self._error
        if isinstance(error, pyrage.DecryptError):
            return BackupRefused(f"the identity does not open this backup ({error}): nothing was restored")
        if error is not None:
            return BackupRefused("the backup does not authenticate: it was changed or cut "
                                 f"({type(error).__name__}: {error}); nothing was restored")
        return BackupRefused("the backup ends before its last record (cut?): nothing was restored")

    async def _exactly(self, size: int) -> bytes:
        loop = asyncio.get_running_loop()
        while len(self._buffer) < size:
            more = await loop.run_in_executor(None, self._pipe.read1, max(size - len(self._buffer), 1 << 16))
            if not more:
                raise self._refusal()
            self._buffer += more
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def start(self) -> None:
        if await self._exactly(len(MAGIC)) != MAGIC:
            raise BackupRefused(f"{self.path} is not a Coffer backup (or of a format this version can't read)")

    async def _length(self, limit: int) -> int:
        size = int(_U32.unpack(await self._exactly(4))[0])
        if size > limit:
            raise BackupRefused("the backup holds a record too large for its kind: not a backup this wrote")
        return size

    async def record(self) -> dict[str, Any]:
        """The next record's header (its data, if it has some, through ``chunks()``)."""
        raw = await self._exactly(await self._length(MAX_HEADER))
        try:
            header = json.loads(raw)
        except ValueError:
            raise BackupRefused("the backup holds a record that is not JSON: not a backup this wrote") from None
        if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
            raise BackupRefused("the backup holds a record without a kind: not a backup this wrote")
        return header

    async def chunks(self) -> AsyncIterator[bytes]:
        """The data of the record just read, chunk by chunk."""
        while size := await self._length(MAX_CHUNK):
            yield await self._exactly(size)

    async def data(self, limit: int) -> bytes:
        """The data of the record just read, whole (at most ``limit`` bytes)."""
        out = bytearray()
        async for piece in self.chunks():
            out += piece
            if len(out) > limit:
                raise BackupRefused("the backup holds a file too large for its kind: not a backup this wrote")
        return bytes(out)

    async def skip(self) -> None:
        async for _ in self.chunks():
            pass

    async def finish(self) -> None:
        """After the end record: the stream must end there and have authenticated whole."""
        loop = asyncio.get_running_loop()
        if self._buffer or await loop.run_in_executor(None, self._pipe.read1, 1):
            raise BackupRefused("the backup goes on after its end record: not a backup this wrote")
        await loop.run_in_executor(None, self._thread.join)
        if self._error is not None:
            raise self._refusal()
        self._done = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._pipe.close()  # a decrypting thread still writing gets a broken pipe and ends
        self._thread.join(timeout=10)
