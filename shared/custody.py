"""Key custody: this process's KMS, from its seal (issue #29 item 1, api.md §11).

``COFFER_SEAL`` says what keeps the root key R behind the keyring (``shared.seal``):

* ``file``: today's clear key file, loaded (made on first start) exactly as before: ``open_file``.
* ``awskms`` / ``pkcs11`` (auto seals): ``start`` runs ``auto_unseal`` in the background, retrying
  while the KMS or HSM is away (``SealUnavailable``: 1 s, doubling to 30 s) and logging ``sealed`` with
  the reason each time; a ``SealError`` (a wrong PIN, a key that refuses, a damaged file) stops the
  retries (another try could lock the PIN): the process stays sealed, saying why, until restarted. On
  a first start (no sealed keyring yet) the keyring is made here, at start, not at ``sys/init``: an
  auto seal has nothing to show anybody, every process of a distributed installation needs the keyring
  before its services can start (the first one to make it wins, the others open it), and it is what
  the ``file`` seal does with its key file.
* ``shamir``: sealed until enough shares reach ``add_share`` (``POST /v1/sys/unseal``); an installation
  without a sealed keyring yet is made by ``init_shamir`` (``POST /v1/sys/init``), which answers the
  shares once.

``check`` refuses a start that would lose keys: a clear key file while another seal is chosen (the
migrate command moves it), a sealed keyring while ``file`` is chosen, a keyring sealed with another seal.

Nothing here logs or raises a share, R, a KEK or the PIN: ``SealFailure`` messages name none, and
``reason`` is a short code. Unseal attempts are kept in memory (outcome and reason, never the share)
until the platform runs and can write them to the audit log (``take_attempts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from shared.config import Settings
from shared.crypto import LocalKms
from shared.keyring import exclusive
from shared.seal import (
    Seal,
    SealedKeyring,
    SealedStore,
    SealError,
    SealFailure,
    SealUnavailable,
    ShamirSeal,
    Unsealer,
    open_local_kms,
)
from shared.seal_migrate import auto_unseal, initialise

log = structlog.get_logger("coffer.seal")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
MAX_ATTEMPTS_KEPT = 1000
MIGRATE = "python -m shared.seal migrate"


class CustodyRefused(SystemExit):
    """A start refused before anything runs (a message for the operator, no key material)."""


@dataclass
class UnsealAttempt:
    """One ``sys/unseal`` call while sealed, as the audit log will get it (never the share)."""

    at: datetime
    outcome: str  # "ok" or the error code
    reason: str | None  # the seal's reason code (wrong_share, repeated_share, ...)
    status: int
    client_ip: str | None
    request_id: str


class Custody:
    """This process's seal: sealed or not, why, and the KMS once unsealed (any seal but ``file``)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        if settings.seal == "file":
            raise ValueError("the file seal has no custody: open_file")
        self.settings = settings
        self.type = settings.seal
        self.path = settings.sealed_keyring_file
        self.kms: LocalKms | None = None
        self._root_key: bytes | None = None
        self.unsealer: Unsealer | None = None
        #: a shamir sys/init of the sealed gateway is under way: the platform's own sys/init refuses meanwhile
        self.init_reserved = False
        self.reason: str | None = None
        self.message: str | None = None
        self.unsealed = asyncio.Event()
        #: set by ``POST /v1/sys/seal``: the process stops its platform and seals again
        self.seal_requested = asyncio.Event()
        #: how the last unseal happened (``auto``, ``shares``, ``init``), how long it took since the process
        #: began to unseal (retries and waits for shares included), and its successful attempt alone (auto)
        self.how: str | None = None
        self.took: float | None = None
        self.attempt: float | None = None
        self.attempts: list[UnsealAttempt] = []
        self.dropped_attempts = 0
        self._clock, self._sleep = clock, sleep
        self._task: asyncio.Task[None] | None = None
        self._started = clock()
        self._init_lock = asyncio.Lock()

    # -- state -------------------------------------------------------------------------------------

    @property
    def sealed(self) -> bool:
        return self.kms is None

    @property
    def auto(self) -> bool:
        return self.type in ("awskms", "pkcs11")

    @property
    def initialized(self) -> bool:
        return self.path.exists()

    @property
    def threshold(self) -> int | None:
        if self.unsealer is not None:
            return self.unsealer.threshold
        if self.type == "shamir" and self.path.exists():
            with contextlib.suppress(SealError, KeyError, TypeError, ValueError):
                return int(SealedKeyring.read(self.path).record["secret_threshold"])
        return None

    def status(self) -> dict[str, Any]:
        """``GET /v1/sys/seal-status``: ``{sealed, type, progress, threshold, initialized}`` (+ why, if sealed)."""
        body: dict[str, Any] = {
            "sealed": self.sealed, "type": self.type, "initialized": self.initialized,
            "progress": self.unsealer.progress if (self.sealed and self.unsealer is not None) else 0,
            "threshold": self.threshold}
        if self.sealed and self.reason:
            body["reason"] = self.reason
            if self.message:
                body["message"] = self.message
        return body

    def _sealed_because(self, exc: SealFailure | None, reason: str | None = None, message: str | None = None) -> None:
        """Why it is sealed, as anyone may read it (health and seal-status take no token): the seal's reason
        code, and words of our own; the seal's message (a library path, a token label) goes to the log only."""
        self.reason = exc.reason if exc is not None else reason
        if exc is not None:
            self.message = ("the seal's " + ("KMS" if self.type == "awskms" else "HSM") + " can't be used now "
                            "(the reason code says why; the log has more); retrying"
                            if isinstance(exc, SealUnavailable) else
                            "the seal refused (the reason code says why; the log has more): fix it and restart")
        else:
            self.message = message

    def _opened(self, root_key: bytes, kms: LocalKms, how: str, attempt_began: float | None = None) -> None:
        self._root_key, self.kms, self.how = root_key, kms, how
        now = self._clock()
        self.took = now - self._started
        self.attempt = now - attempt_began if attempt_began is not None else None
        self.reason = self.message = None
        self.unsealer = None
        self.unsealed.set()
        log.warning("unsealed", seal=self.type, how=how, took_ms=round(self.took * 1000, 1),
                    attempt_ms=round(self.attempt * 1000, 1) if self.attempt is not None else None)

    # -- start ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Sealed from here on: auto seals try to unseal in the background; shamir waits for shares."""
        if self.auto:  # the seal's client library, loaded with the process's other modules, not in the unseal
            with contextlib.suppress(ImportError):
                importlib.import_module("aiobotocore.session" if self.type == "awskms" else "pkcs11")
        self._started = self._clock()
        if self.auto:
            self._sealed_because(None, "unsealing", "asking the " + ("KMS" if self.type == "awskms" else "HSM")
                                 + " for the root key")
            self._task = asyncio.create_task(self._auto_loop(), name=f"unseal-{self.type}")
            return
        if self.path.exists():
            try:
                self.unsealer = Unsealer(SealedKeyring.read(self.path))
            except SealError as exc:
                raise CustodyRefused(f"coffer: {exc.message}") from None
            self._sealed_because(None, "awaiting_shares", f"give {self.unsealer.threshold} of the "
                                 f"{self.unsealer.shares} unseal shares to POST /v1/sys/unseal")
        else:
            self._sealed_because(None, "not_initialised", "POST /v1/sys/init with secret_shares and "
                                 "secret_threshold makes the seal and answers the shares once")
        log.warning("sealed", seal=self.type, reason=self.reason)

    async def _auto_once(self) -> None:
        began = self._clock()
        seal = _start().auto_seal_of(self.settings)
        if not self.path.exists():
            try:
                await initialise(self.path, seal)
                log.warning("sealed_keyring_created", seal=self.type, path=str(self.path))
            except SealError as exc:
                if exc.reason != "exists":  # another process made it first: open theirs
                    raise
        root_key, kms = await auto_unseal(self.path, seal)
        self._opened(root_key, kms, "auto", began)

    async def _auto_loop(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self._auto_once()
                return
            except SealUnavailable as exc:
                self._sealed_because(exc)
                log.warning("sealed", seal=self.type, reason=exc.reason, message=exc.message, retry_in_s=delay)
            except SealError as exc:
                self._sealed_because(exc)
                log.error("sealed", seal=self.type, reason=exc.reason, message=exc.message, retry_in_s=None,
                          hint="fix it and restart the process")
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an unforeseen failure: sealed, said, retried
                self._sealed_because(None, "seal_failed", f"unsealing failed ({type(exc).__name__})")
                log.warning("sealed", seal=self.type, reason=self.reason, message=self.message, retry_in_s=delay)
            await self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def wait(self) -> LocalKms:
        """The KMS, once unsealed."""
        await self.unsealed.wait()
        assert self.kms is not None
        return self.kms

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- shamir --------------------------------------------------------------------------------------

    def add_share(self, share: str) -> tuple[int, int]:
        """One share: ``(progress, threshold)``; ``SealError`` for a wrong, repeated or malformed one."""
        if self.type != "shamir":
            raise SealError(f"the {self.type} seal takes no shares: it unseals by itself", reason="auto_seal")
        if not self.sealed:
            threshold = self.threshold or 0
            return threshold, threshold
        if self.unsealer is None:
            raise SealError("not initialised: POST /v1/sys/init makes the seal", reason="not_initialised")
        progress, threshold = self.unsealer.add(share)
        if self.unsealer.root_key is not None:
            root_key = self.unsealer.root_key
            self._opened(root_key, open_local_kms(self.path, root_key), "shares")
        return progress, threshold

    async def init_shamir(self, shares: int, threshold: int) -> list[str]:
        """A new installation: R split into ``shares``, the keyring sealed under it, unsealed in memory."""
        async with self._init_lock:
            if self.type != "shamir" or self.path.exists():
                raise SealError("the seal is initialised already", reason="exists")
            root_key, made = await initialise(self.path, ShamirSeal(shares, threshold))
            assert made is not None
            self._opened(root_key, open_local_kms(self.path, root_key), "init")
            return made

    async def rotate_root(self, shares: int | None = None, threshold: int | None = None) -> list[str] | None:
        """``sys/rotate-root``: a new R from the same seal (shamir: new shares, ``shares``/``threshold`` or the
        current counts; an auto seal: R encrypted anew by the HSM or KMS); the root keyring re-sealed under
        it. The service keyrings are untouched (their shares U_s stay the same: only what wraps them moved).
        Old shares no longer open anything."""
        async with self._init_lock:
            if self.kms is None:
                raise SealError("sealed", reason="sealed")
            if self.type == "shamir":
                record = SealedKeyring.read(self.path).record
                seal: Seal = ShamirSeal(shares or int(record["secret_shares"]),
                                        threshold or int(record["secret_threshold"]))
            else:
                seal = _start().auto_seal_of(self.settings)
            new_key, record, made = await seal.init()
            with exclusive(self.path):  # the lock root shares are added under
                self.kms.reseal(SealedStore(new_key, record))
            self._root_key = new_key
            log.warning("root_key_rotated", seal=self.type)
            return made

    # -- sealing again ---------------------------------------------------------------------------------

    def seal(self) -> None:
        """Forget R and the keyring (every reference this process holds): sealed again.

        shamir waits for shares again; an auto seal stays sealed until the process is restarted (an operator
        who sealed it wants it closed; a no-token call must not open it again).
        """
        self.kms, self._root_key = None, None
        self.unsealed.clear()
        self.seal_requested.clear()
        self.how = self.took = self.attempt = None
        self._started = self._clock()
        if self.type == "shamir":
            self.unsealer = Unsealer(SealedKeyring.read(self.path))
            self._sealed_because(None, "awaiting_shares", f"give {self.unsealer.threshold} of the "
                                 f"{self.unsealer.shares} unseal shares to POST /v1/sys/unseal")
        else:
            self._sealed_because(None, "sealed_by_operator", "sealed by POST /v1/sys/seal: restart the process "
                                 "to unseal it with the " + self.type + " seal")
        log.warning("sealed", seal=self.type, reason=self.reason)

    # -- unseal attempts, for the audit log ----------------------------------------------------------------

    def note_attempt(self, *, outcome: str, reason: str | None, status: int, client_ip: str | None,
                     request_id: str) -> None:
        """Kept for the audit log until unsealed: the latest ``MAX_ATTEMPTS_KEPT`` (the oldest dropped and
        counted), so a flood of junk shares can't push out the key holders' own, which come last."""
        if len(self.attempts) >= MAX_ATTEMPTS_KEPT:
            self.attempts.pop(0)
            self.dropped_attempts += 1
        self.attempts.append(UnsealAttempt(datetime.now(UTC), outcome, reason, status, client_ip, request_id))

    def take_attempts(self) -> tuple[list[UnsealAttempt], int]:
        attempts, dropped = self.attempts, self.dropped_attempts
        self.attempts, self.dropped_attempts = [], 0
        return attempts, dropped


#: this process's custody, when it has one (set by the process's main: embedded, or a distributed gateway);
#: what ``POST /v1/sys/seal`` and ``GET /v1/sys/seal-status`` of the running gateway look at. A seal belongs
#: to a process (as its signal handlers do), not to one of the platforms a test may start in it.
_INSTALLED: Custody | None = None


def install(custody: Custody | None) -> None:
    global _INSTALLED
    _INSTALLED = custody


def _start() -> Any:
    """shared.custody_start, imported when first needed (it imports this module)."""
    import importlib
    return importlib.import_module("shared.custody_start")


def installed() -> Custody | None:
    return _INSTALLED


# what happens before a seal opens: in shared.custody_start, importable from here too — looked up when asked
# (PEP 562), never at import: custody_start imports this module, so importing it here made a cycle
_START = ("auto_seal_of", "check", "open_file", "open_for_tool")


def __getattr__(name: str) -> Any:
    if name not in _START:
        raise AttributeError(f"module 'shared.custody' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module("shared.custody_start"), name)
