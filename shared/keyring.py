"""The key hierarchy below the root keyring (issue #29 item 2): a keyring per service, a KEK per tenant.

    root keyring (kms.key, or keyring.sealed under R: shamir, awskms, pkcs11)
      └─ U_s, a 32-byte key per service ("svc_<service>" in the root keyring)
           + S_s, a 32-byte salt in the service's own schema (table ``keyring``)
           = K_s = HKDF-SHA256(U_s, salt=S_s, info="coffer-service-keyring|v1|<service>")
             └─ the service's keyring file (``<keyring dir>/<service>.<id>.keyring``, AES-256-GCM under K_s):
                  service KEKs ``skek_…`` (the service's own values: signing keys, audit and cursor keys)
                  tenant KEKs ``tkek_…``, each wrapped by a service KEK (the tenant's values)
                    └─ a data key per value (``shared.crypto.seal``), wrapped by the tenant KEK

What it takes to open a service's keys: the root keyring (so the seal: shares, the HSM or the KMS), the
service's salt (so its database role) and its keyring file. The gateway, which gathers the shares of a
shamir seal, holds every U_s but no other service's salt.

Why tenant KEKs live in a file and not in the database: deleting a tenant replaces its entry by a
tombstone in every service's keyring file (``shred``) before any of its rows is removed, so a copy of the
database taken before the deletion — restored anywhere, with the same seal — can't open that tenant's
values, while every other tenant's still open. A backup (services/admin) holds both, so its restore is
told which tenants were deleted since and tombstones them in the restored keyrings (docs/operations.md,
"Backups"); keyring copies made otherwise go apart from the database's, with a short retention.

Every process of one service shares its keyring file: changes are made under ``flock`` after a re-read,
written atomically, and seen by the other processes at their next use (one ``stat``). Tenant KEKs are
unwrapped at first use. Messages name ids, never key material.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.crypto import KEY_BYTES, NONCE_BYTES, LocalKms
from shared.errors import EncryptionError

FORMAT_VERSION = 1
#: prefixes of key ids: a service KEK, a tenant KEK, and a service's share of the root keyring
SERVICE_KEK, TENANT_KEK, SERVICE_ROOT = "skek_", "tkek_", "svc_"


def root_share_id(service: str) -> str:
    """The id of U_s in the root keyring."""
    return SERVICE_ROOT + service


def service_key(root_share: bytes, salt: bytes, service: str) -> bytes:
    """K_s from U_s (the root keyring) and S_s (the service's schema)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=salt,
                info=b"coffer-service-keyring|v1|" + service.encode()).derive(root_share)


def keyring_id(salt: bytes) -> str:
    """Names the keyring file of one installation's service (a fresh schema has a fresh salt)."""
    return hashlib.sha256(b"coffer-keyring-id|" + salt).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _seal(key: bytes, plain: bytes, aad: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """One change at a time across the processes sharing ``path`` (``flock`` on ``<path>.lock``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass
class _Tenant:
    active: str
    #: tkek id → (service KEK id, the tenant KEK wrapped by it; with ``kms``: its KMS ciphertext wrapped by it)
    wrapped: dict[str, tuple[str, bytes]]
    #: the tenant's own KMS key (BYOK, shared/byok.py), which wraps its KEKs too
    kms: dict[str, str] | None = None


class ServiceKeyring:
    """A service's keys (a ``shared.crypto.KmsProvider`` for its own values); ``tenant(id)`` for a tenant's.

    ``legacy``, the root keyring, opens values sealed before the hierarchy (KEK ids ``kek_…``) until a
    re-wrap (``shared.db.rewrap``) has moved them under this keyring; nothing new is sealed by it.
    """

    def __init__(self, path: Path, service: str, key: bytes, legacy: LocalKms | None = None) -> None:
        self.path, self.service, self._key, self.legacy = Path(path), service, key, legacy
        self._aad = f"coffer-service-keyring|v{FORMAT_VERSION}|{service}".encode()
        self._keys: dict[str, bytes] = {}
        self._active = ""
        self._tenants: dict[str, _Tenant | None] = {}  # None: shredded
        self._tenant_keys: dict[str, tuple[str, bytes]] = {}  # tkek id → (tenant id, key): opened on first use
        self._tenant_sealed: dict[str, tuple[str, str, bytes]] = {}  # tkek id → (tenant id, service KEK, wrapped)
        self._stamp: tuple[int, int] = (0, 0)
        # BYOK tenants (shared/byok.py): their KEKs' KMS ciphertexts, and what the KMS last gave back for them,
        # usable until a deadline (a key disabled in the KMS stops the tenant's reads by then)
        self._byok_blobs: dict[str, tuple[str, bytes]] = {}  # tkek id → (tenant id, KMS ciphertext)
        self._byok_open: dict[str, tuple[str, bytes, bytes]] = {}  # tkek id → (tenant id, key, ciphertext)
        self._byok_until: dict[str, float] = {}  # tenant id → monotonic deadline
        self.byok_reason: dict[str, str] = {}  # tenant id → why its keys are not open now

    # -- the file ------------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, service: str, root_share: bytes, salt: bytes, *,
             legacy: LocalKms | None = None) -> ServiceKeyring:
        """The service's keyring in ``directory``, made (with a first service KEK) if there is none."""
        path = Path(directory) / f"{service}.{keyring_id(salt)}.keyring"
        ring = cls(path, service, service_key(root_share, salt, service), legacy)
        if not path.exists():
            with exclusive(path):
                if not path.exists():
                    kid = SERVICE_KEK + secrets.token_hex(8)
                    ring._keys, ring._active = {kid: secrets.token_bytes(KEY_BYTES)}, kid
                    ring._write()
        ring._load()
        return ring

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_bytes())
            if doc.get("version") != FORMAT_VERSION or doc.get("service") != self.service:
                raise ValueError("not this service's keyring")
            blob = base64.b64decode(doc["keyring"], validate=True)
            inner = json.loads(_open(self._key, blob, self._aad))
            keys = {k: base64.b64decode(v) for k, v in inner["keys"].items()}
            active = inner["active"]
            if active not in keys:
                raise ValueError("no active key")
            tenants: dict[str, _Tenant | None] = {}
            sealed: dict[str, tuple[str, str, bytes]] = {}
            byok: dict[str, tuple[str, bytes]] = {}
            for tid, entry in inner["tenants"].items():
                if entry is None:
                    tenants[tid] = None
                    continue
                wrapped = {tk: (sk, base64.b64decode(w)) for tk, (sk, w) in entry["keys"].items()}
                tenants[tid] = _Tenant(entry["active"], wrapped, entry.get("kms"))
                for tk, (sk, w) in wrapped.items():
                    if entry.get("kms"):
                        byok[tk] = (tid, _open(keys[sk], w, self._tenant_aad(tid, tk)))
                    else:  # opened on first use: a reload costs the file, not a decryption per tenant
                        sealed[tk] = (tid, sk, w)
        except FileNotFoundError:
            raise EncryptionError("service keyring not found", details={"service": self.service}) from None
        except (InvalidTag, OSError, ValueError, KeyError, TypeError):
            raise EncryptionError("service keyring can't be opened with this installation's keys",
                                  details={"service": self.service}) from None
        stamp = self._stat()
        self._keys, self._active, self._tenants, self._tenant_sealed, self._stamp = (
            keys, active, tenants, sealed, stamp)
        self._tenant_keys = {k: v for k, v in self._tenant_keys.items() if k in sealed}
        self._byok_blobs = byok
        self._byok_open = {tk: v for tk, v in self._byok_open.items() if tk in byok and byok[tk][1] == v[2]}

    def _tenant_aad(self, tenant_id: str, kek_id: str) -> bytes:
        return f"coffer-tenant-kek|{self.service}|{tenant_id}|{kek_id}".encode()

    def _write(self) -> None:
        inner = {"active": self._active, "keys": {k: _b64(v) for k, v in self._keys.items()},
                 "tenants": {tid: None if t is None else
                             {"active": t.active, "keys": {tk: [sk, _b64(w)] for tk, (sk, w) in t.wrapped.items()},
                              **({"kms": t.kms} if t.kms else {})}
                             for tid, t in self._tenants.items()}}
        doc = {"version": FORMAT_VERSION, "service": self.service,
               "keyring": _b64(_seal(self._key, json.dumps(inner).encode(), self._aad))}
        LocalKms._write(self.path, json.dumps(doc).encode(), replace=True)
        self._stamp = self._stat()

    def _follow(self) -> None:
        """Pick up a change made by another process of this service (one ``stat``)."""
        if self._stat() != self._stamp:
            self._load()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        with exclusive(self.path):
            self._load()
            yield
            self._write()

    # -- the service's own values (KmsProvider) -----------------------------------------------------

    @property
    def active_key_id(self) -> str:
        self._follow()
        return self._active

    def active_ids(self) -> tuple[str, ...]:
        """Every key id new values are wrapped by: the service's, and each live tenant's."""
        self._follow()
        return (self._active, *(t.active for t in self._tenants.values() if t is not None))

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        kid = self.active_key_id
        return kid, _seal(self._keys[kid], data_key, kid.encode() + b"|" + aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if kek_id.startswith("kek_") and self.legacy is not None:
            return self.legacy.unwrap(kek_id, wrapped, aad)
        self._follow()
        key = self._keys.get(kek_id)
        if key is None:
            raise EncryptionError("data key is wrapped by an unknown KEK", details={"kek_id": kek_id})
        return _unwrap(key, kek_id, wrapped, aad)

    def rotate(self) -> str:
        """A new service KEK, and a new KEK for every live tenant; tenant KEKs re-wrapped under the new
        service KEK (old keys kept: values under them still open until re-wrapped)."""
        with self._changing():
            kid = SERVICE_KEK + secrets.token_hex(8)
            self._keys[kid], self._active = secrets.token_bytes(KEY_BYTES), kid
            for tid, t in self._tenants.items():
                if t is None:
                    continue
                if t.kms:  # a BYOK tenant's KEK stays (its KMS key is the tenant's to rotate): re-wrapped only
                    t.wrapped = {k: (kid, _seal(self._keys[kid], self._byok_blobs[k][1], self._tenant_aad(tid, k)))
                                 for k in t.wrapped}
                    continue
                tk = TENANT_KEK + secrets.token_hex(8)
                self._tenant_keys[tk] = (tid, secrets.token_bytes(KEY_BYTES))
                t.active = tk
                t.wrapped = {k: (kid, _seal(self._keys[kid], self._key_of(k), self._tenant_aad(tid, k)))
                             for k in (*t.wrapped, tk)}
        return kid

    # -- tenants -------------------------------------------------------------------------------------

    def tenant(self, tenant_id: str) -> TenantKeys:
        """The KmsProvider for ``tenant_id``'s values (its KEK is made at its first sealed value)."""
        return TenantKeys(self, tenant_id)

    def _tenant_active(self, tenant_id: str) -> tuple[str, bytes]:
        self._follow()
        if tenant_id in self._tenants and self._tenants[tenant_id] is None:
            raise EncryptionError("the tenant's keys are destroyed", details={"tenant_id": tenant_id})
        if tenant_id not in self._tenants:
            with self._changing():
                if tenant_id not in self._tenants:
                    tk = TENANT_KEK + secrets.token_hex(8)
                    key = secrets.token_bytes(KEY_BYTES)
                    self._tenant_keys[tk] = (tenant_id, key)
                    self._tenants[tenant_id] = _Tenant(tk, {tk: (self._active, _seal(
                        self._keys[self._active], key, self._tenant_aad(tenant_id, tk)))})
            entry = self._tenants[tenant_id]
            if entry is None:
                raise EncryptionError("the tenant's keys are destroyed", details={"tenant_id": tenant_id})
        entry = self._tenants[tenant_id]
        assert entry is not None
        if entry.kms:
            return entry.active, self._byok_key(tenant_id, entry.active)
        return entry.active, self._key_of(entry.active)

    def _tenant_key(self, tenant_id: str, kek_id: str) -> bytes:
        self._follow()
        found = self._plain(kek_id)
        if found is None and self._byok_blobs.get(kek_id, ("",))[0] == tenant_id:
            return self._byok_key(tenant_id, kek_id)
        if found is None or found[0] != tenant_id:
            raise EncryptionError("data key is wrapped by an unknown KEK", details={"kek_id": kek_id})
        return found[1]

    def _plain(self, kek_id: str) -> tuple[str, bytes] | None:
        """A (non-BYOK) tenant KEK ``(tenant id, key)``, unwrapped at its first use and kept."""
        found = self._tenant_keys.get(kek_id)
        if found is None and kek_id in self._tenant_sealed:
            tenant_id, sk, wrapped = self._tenant_sealed[kek_id]
            try:
                found = (tenant_id, _open(self._keys[sk], wrapped, self._tenant_aad(tenant_id, kek_id)))
            except (InvalidTag, ValueError, KeyError):
                raise EncryptionError("a tenant KEK of the keyring does not open",
                                      details={"kek_id": kek_id}) from None
            self._tenant_keys[kek_id] = found
        return found

    def _key_of(self, kek_id: str) -> bytes:
        found = self._plain(kek_id)
        if found is None:
            raise EncryptionError("a tenant KEK of the keyring is missing", details={"kek_id": kek_id})
        return found[1]

    def _byok_key(self, tenant_id: str, kek_id: str) -> bytes:
        """A BYOK tenant's KEK as the KMS last gave it back, while that answer holds (shared/byok.py)."""
        opened = self._byok_open.get(kek_id)
        if opened is None or time.monotonic() >= self._byok_until.get(tenant_id, 0.0):
            raise EncryptionError("the tenant's own KMS key can't be used now",
                                  details={"tenant_id": tenant_id,
                                           "reason": self.byok_reason.get(tenant_id, "not_checked")})
        return opened[1]

    def shred(self, tenant_id: str) -> bool:
        """Destroy every KEK of ``tenant_id`` (a tombstone stays: none is ever made again); whether it had any."""
        with self._changing():
            had = self._tenants.get(tenant_id) is not None
            self._tenants[tenant_id] = None
            self._tenant_keys = {k: v for k, v in self._tenant_keys.items() if v[0] != tenant_id}
            self._tenant_sealed = {k: v for k, v in self._tenant_sealed.items() if v[0] != tenant_id}
            self._byok_open = {k: v for k, v in self._byok_open.items() if v[0] != tenant_id}
        return had

    def shredded(self, tenant_id: str) -> bool:
        self._follow()
        return tenant_id in self._tenants and self._tenants[tenant_id] is None

    def tenant_count(self) -> int:
        self._follow()
        return sum(1 for t in self._tenants.values() if t is not None)


def _unwrap(key: bytes, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
    try:
        return _open(key, wrapped, kek_id.encode() + b"|" + aad)
    except (InvalidTag, ValueError):
        raise EncryptionError("data key could not be unwrapped") from None


@dataclass(frozen=True)
class TenantKeys:
    """A tenant's view of its service's keyring: a ``KmsProvider`` wrapping under the tenant's KEK.

    It opens only keys of its own tenant (a row moved across tenants does not open), and the
    service's legacy root keyring for values sealed before the hierarchy.
    """

    ring: ServiceKeyring
    tenant_id: str

    @property
    def active_key_id(self) -> str:
        return self.ring._tenant_active(self.tenant_id)[0]

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        kid, key = self.ring._tenant_active(self.tenant_id)
        return kid, _seal(key, data_key, kid.encode() + b"|" + aad)

    def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if kek_id.startswith(TENANT_KEK):
            return _unwrap(self.ring._tenant_key(self.tenant_id, kek_id), kek_id, wrapped, aad)
        if not kek_id.startswith("kek_") or self.ring.legacy is None:  # a service's own value never opens here
            raise EncryptionError("data key is wrapped by an unknown KEK", details={"kek_id": kek_id})
        if self.ring.shredded(self.tenant_id):
            raise EncryptionError("the tenant's keys are destroyed", details={"tenant_id": self.tenant_id})
        return self.ring.legacy.unwrap(kek_id, wrapped, aad)  # sealed before the hierarchy

    def rotate(self) -> str:
        return self.ring.rotate()
