"""The key hand-over of a shamir seal in distributed mode (issue #29 item 2).

With ``shamir`` only the gateway gathers the shares, so only the gateway's process holds R and the root
keyring. Each other service process, at start, makes a fresh X25519 key pair (in memory only) and asks the
gateway over the bus for its own share U_s of the root keyring (``gateway.keyring_<service>``, a method
only that service's RabbitMQ user may call when ``COFFER_BUS_USERS`` names one user per service). The
gateway answers U_s encrypted to that public key with HPKE (RFC 9180: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, AES-256-GCM; ``cryptography``'s implementation), bound to the service's name. The service then
needs its own salt S_s (its database role) to turn U_s into K_s and open its keyring: the gateway holds
every U_s, but no other service's salt.

A service with values still sealed under the root keyring (sealed before the hierarchy) asks once more,
with ``legacy``, for the root keyring's KEKs (never another service's share) to move them; after that
first start it never asks again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from shared.bus import Bus
from shared.context import RequestContext
from shared.contracts import Contract
from shared.crypto import KEY_BYTES, LocalKms
from shared.errors import CofferError, EncryptionError, ServiceUnavailable, ValidationError
from shared.keyring import SERVICE_ROOT, ServiceKeyring, exclusive, root_share_id
from shared.registry import SERVICES, rpc_name

log = structlog.get_logger("coffer.handover")

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
#: how long a service waits between asks while the gateway is sealed or away (then up to the maximum)
RETRY_FIRST, RETRY_MAX = 0.5, 5.0


class RootKeys(Protocol):
    """Where a process gets its service's share U_s: the root keyring it holds (``LocalRoot``), or the
    gateway's hand-over (``shared.handover.HandedOver``, shamir in distributed mode)."""

    path: Path

    async def share(self, service: str) -> bytes: ...

    async def legacy(self) -> LocalKms | None: ...


@dataclass
class LocalRoot:
    """The root keyring held by this process (the ``file`` seal, an auto seal, or the gateway of any)."""

    root: LocalKms

    @property
    def path(self) -> Path:
        return self.root.path

    async def share(self, service: str) -> bytes:
        return root_share(self.root, service)

    async def legacy(self) -> LocalKms | None:
        return self.root


async def ensure_salt(conn: Any) -> bytes:
    """S_s, the service's salt in its own schema (table ``keyring``), made on first start."""
    await conn.execute("INSERT INTO keyring (name, value) VALUES ('salt', $1) ON CONFLICT (name) DO NOTHING",
                       secrets.token_bytes(KEY_BYTES))
    return bytes(await conn.fetchval("SELECT value FROM keyring WHERE name = 'salt'"))


def root_share(root: LocalKms, service: str) -> bytes:
    """U_s from the root keyring, added to it (under its lock) if it isn't there yet."""
    kid = root_share_id(service)
    share = root.key(kid)
    if share is not None:
        return share
    with exclusive(root.path):
        return root.add_key(kid)


def open_service_keyring(root: LocalKms, directory: Path, service: str, salt: bytes) -> ServiceKeyring:
    """The service's keyring from the root keyring and its salt (the root keyring kept for legacy values)."""
    return ServiceKeyring.open(directory, service, root_share(root, service), salt, legacy=root)


def method_of(service: str) -> str:
    return f"keyring_{service}"


def _info(service: str) -> bytes:
    return b"coffer-keyring-handover|v1|" + service.encode()


class HandoverRequest(Contract):
    #: the asking process's fresh X25519 public key (32 bytes, base64)
    public_key: str
    #: also the root keyring's KEKs, for values sealed before the hierarchy
    legacy: bool = False


class HandoverReply(Contract):
    #: HPKE ciphertext (encapsulated key + AES-256-GCM) of ``{"share": …, "legacy": …}``, base64
    sealed: str


def _public(text: str) -> X25519PublicKey:
    try:
        raw = base64.b64decode(text, validate=True)
        return X25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise ValidationError.on("public_key", "a 32-byte X25519 public key, base64") from None


def answer(root: LocalKms, service: str, request: HandoverRequest) -> HandoverReply:
    """The gateway's side: U_s (and, if asked, the root keyring's KEKs) encrypted to the asker's key."""
    body: dict[str, Any] = {"share": base64.b64encode(root_share(root, service)).decode()}
    if request.legacy:
        body["legacy"] = {"active": root.active_key_id, "keys": {
            k: base64.b64encode(v).decode() for k in root.key_ids if not k.startswith(SERVICE_ROOT)
            and (v := root.key(k)) is not None}}
    sealed = SUITE.encrypt(json.dumps(body).encode(), _public(request.public_key), info=_info(service))
    return HandoverReply(sealed=base64.b64encode(sealed).decode())


def handlers(root_of: Any) -> dict[str, Any]:
    """The gateway's RPC methods ``keyring_<service>``; ``root_of()`` is the root keyring (gateway unsealed)."""
    def one(service: str) -> Any:
        async def handle(payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
            reply = answer(root_of(), service, HandoverRequest.model_validate(payload))
            log.warning("keyring_handed_over", service=service, request_id=ctx.request_id)
            return reply.model_dump()
        return handle
    return {method_of(s): one(s) for s in SERVICES if s != "gateway"}


def callers() -> dict[str, tuple[str, ...]]:
    """Who may call each hand-over method: that service alone."""
    return {method_of(s): (s,) for s in SERVICES if s != "gateway"}


@dataclass
class HandedOver:
    """A service process's side: its share, asked for until the gateway (unsealed) answers."""

    bus: Bus
    service: str
    path: Path  # the root keyring's path (the keyring directory is beside it)
    timeout: float = 5.0
    _share: bytes | None = field(default=None, repr=False)
    _legacy: LocalKms | None = field(default=None, repr=False)
    took: float | None = None

    async def _ask(self, legacy: bool, stop: asyncio.Event | None = None) -> dict[str, Any]:
        began, delay, said = time.monotonic(), RETRY_FIRST, False
        while True:
            private = X25519PrivateKey.generate()
            public = base64.b64encode(private.public_key().public_bytes_raw()).decode()
            try:
                raw = await self.bus.call(rpc_name("gateway"), method_of(self.service),
                                          HandoverRequest(public_key=public, legacy=legacy).model_dump(),
                                          RequestContext(), timeout=self.timeout)
                reply = HandoverReply.model_validate(raw)
                body = json.loads(SUITE.decrypt(base64.b64decode(reply.sealed), private, info=_info(self.service)))
                self.took = time.monotonic() - began
                return dict(body)
            except (ServiceUnavailable, CofferError) as exc:
                if not said or delay >= RETRY_MAX:
                    log.warning("keyring_handover_waiting", service=self.service,
                                reason=getattr(exc, "code", type(exc).__name__), retry_in_s=delay)
                    said = True
            except Exception as exc:  # noqa: BLE001 - a reply that doesn't open: said, retried
                log.warning("keyring_handover_refused", service=self.service, reason=type(exc).__name__)
            if stop is not None and stop.is_set():
                raise asyncio.CancelledError
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def share(self, service: str) -> bytes:
        if service != self.service:
            raise EncryptionError("a process opens only its own service's keyring", details={"service": service})
        if self._share is None:
            body = await self._ask(legacy=False)
            share = base64.b64decode(body["share"])
            if len(share) != KEY_BYTES:
                raise EncryptionError("the handed-over share is not a key", details={"service": service})
            self._share = share
        return self._share

    async def legacy(self) -> LocalKms | None:
        if self._legacy is None:
            body = await self._ask(legacy=True)
            doc = body.get("legacy") or {}
            keys = {k: base64.b64decode(v) for k, v in doc.get("keys", {}).items()}
            if doc.get("active") in keys:
                # no file behind it (a path that doesn't exist: it never re-reads one)
                self._legacy = LocalKms(self.path.with_name(".handed-over"), keys, doc["active"], store=_ReadOnly())
        return self._legacy


class _ReadOnly:
    """A handed-over root keyring is never written (no file: ``LocalKms`` only unwraps with it)."""

    def dump(self, keys: Any, active: str) -> bytes:
        raise EncryptionError("a handed-over root keyring is read-only")

    def parse(self, data: bytes) -> tuple[dict[str, bytes], str]:
        raise EncryptionError("a handed-over root keyring is read-only")
