"""Tenants that hold their own key (BYOK, issue #29 item 4): a tenant's KEKs wrapped by its own AWS KMS key too.

A tenant set with ``kms_key: {type: "awskms", key_id}`` (by the partner above it) has, in every service's
keyring, each of its KEKs encrypted by that KMS key (``Encrypt`` with the encryption context
``{"coffer": "tenant-kek", "service", "tenant", "kek"}``), and that ciphertext wrapped by the service's KEK.
Opening the tenant's values then takes the KMS's answer as well as the platform's keys.

A read never calls the KMS: each service process asks it every ``COFFER_BYOK_CHECK_INTERVAL`` (20 s) for
each BYOK tenant (the key's state, and a ``Decrypt`` of its KEKs) and keeps what it gave back until a
deadline (``COFFER_BYOK_TTL``, 60 s). A key disabled in the KMS stops the tenant's reads at the next check
(``encryption_error``, ``details.reason``); a KMS that can't be reached at all stops them at the deadline;
enabling the key brings them back at the next check. Other tenants never notice: their KEKs don't involve
the KMS. A BYOK tenant's KEKs are not replaced by ``sys/kms:rotate`` (re-wrapped only): its key is the
tenant's to rotate, in its KMS.

The AWS configuration is the platform's (``COFFER_AWSKMS_REGION``, ``COFFER_AWSKMS_ENDPOINT_URL``, the
usual credential chain); a key ARN names its own region. The tenant grants the platform's AWS principal
``kms:Encrypt``, ``kms:Decrypt`` and ``kms:DescribeKey`` on its key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import structlog

from shared.errors import EncryptionError, InvalidConfig, ServiceUnavailable
from shared.keyring import ServiceKeyring, _seal
from shared.seal import SealFailure, SealUnavailable
from shared.seal_kms import AwsKmsSeal, _aws_error

log = structlog.get_logger("coffer.byok")


def _context(ring: ServiceKeyring, tenant_id: str, kek_id: str) -> dict[str, str]:
    return {"coffer": "tenant-kek", "service": ring.service, "tenant": tenant_id, "kek": kek_id}


class TenantKms:
    """AWS KMS for tenants' keys (aiobotocore through the seal's client: the same timeouts and error mapping)."""

    def __init__(self, region: str = "us-east-1", endpoint_url: str | None = None,
                 platform_key: str | None = None) -> None:
        self.region, self.endpoint_url = region, endpoint_url
        #: the platform's own seal key (``COFFER_AWSKMS_KEY_ID``): never a tenant's
        self.platform_key = platform_key

    async def arn(self, key_id: str) -> str:
        """The key's ARN (an id, an alias or an ARN of it all name the same key)."""
        answer = await self._ask(key_id, "describe_key")
        return str(answer.get("KeyMetadata", {}).get("Arn") or key_id)

    async def refuse_platform_key(self, key_id: str) -> None:
        """``invalid_config`` if ``key_id`` is the platform's own seal key, however it is named."""
        if self.platform_key is None:
            return
        try:
            same = key_id == self.platform_key or await self.arn(key_id) == await self.arn(self.platform_key)
        except SealFailure:
            return  # a key the KMS won't describe is refused (or not) by Encrypt below
        if same:
            raise InvalidConfig("the platform's own seal key can't be a tenant's key",
                                details={"field": "kms_key", "reason": "platform_key"})

    def _client(self, key_id: str) -> Any:
        parts = key_id.split(":")
        region = parts[3] if key_id.startswith("arn:") and len(parts) > 3 and parts[3] else self.region
        return AwsKmsSeal(region=region, endpoint_url=self.endpoint_url)._client()

    async def _ask(self, key_id: str, operation: str, **arguments: Any) -> dict[str, Any]:
        """``operation`` on the key, after its state (a key not Enabled is ``SealUnavailable``)."""
        try:
            async with self._client(key_id) as kms:
                await AwsKmsSeal._check_state(kms, key_id)
                return dict(await getattr(kms, operation)(KeyId=key_id, **arguments))
        except SealFailure:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped; no key material in any message
            raise _aws_error(exc) from None

    async def encrypt(self, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
        answer = await self._ask(key_id, "encrypt", Plaintext=plaintext, EncryptionContext=dict(context))
        return bytes(answer["CiphertextBlob"])

    async def decrypt(self, key_id: str, blob: bytes, context: Mapping[str, str]) -> bytes:
        answer = await self._ask(key_id, "decrypt", CiphertextBlob=blob, EncryptionContext=dict(context))
        return bytes(answer.get("Plaintext") or b"")


async def refresh(ring: ServiceKeyring, kms: TenantKms, ttl: float) -> dict[str, str | None]:
    """Ask the KMS for every BYOK tenant's KEKs; what each tenant's check found (``None``: open)."""
    ring._follow()
    found: dict[str, str | None] = {}
    for tenant_id, entry in list(ring._tenants.items()):
        if entry is None or not entry.kms:
            continue
        try:
            opened = {}
            for kek_id in entry.wrapped:
                blob = ring._byok_blobs[kek_id][1]
                opened[kek_id] = (tenant_id, await kms.decrypt(entry.kms["key_id"], blob,
                                                               _context(ring, tenant_id, kek_id)), blob)
        except SealFailure as exc:
            _closed(ring, tenant_id, exc.reason)
            found[tenant_id] = exc.reason
            continue
        if ring.byok_reason.pop(tenant_id, None) is not None:
            log.warning("tenant_kms_key_usable_again", service=ring.service, tenant_id=tenant_id)
        ring._byok_open.update(opened)
        ring._byok_until[tenant_id] = time.monotonic() + ttl
        found[tenant_id] = None
    return found


def _closed(ring: ServiceKeyring, tenant_id: str, reason: str) -> None:
    """The tenant's KEKs forgotten at once: its reads answer ``encryption_error`` with ``reason``."""
    if ring.byok_reason.get(tenant_id) != reason:
        log.warning("tenant_kms_key_unusable", service=ring.service, tenant_id=tenant_id, reason=reason)
    ring.byok_reason[tenant_id] = reason
    ring._byok_until[tenant_id] = 0.0
    ring._byok_open = {k: v for k, v in ring._byok_open.items() if v[0] != tenant_id}


async def set_key(ring: ServiceKeyring, tenant_id: str, kms_key: Mapping[str, str] | None, kms: TenantKms,
                  ttl: float) -> None:
    """Wrap the tenant's KEKs with ``kms_key`` too (or, ``None``, no longer): its KEKs made first if it has none.

    The KMS is asked outside the keyring's lock; the keyring is then changed only if the tenant's KEKs are
    still those it encrypted. A key the KMS refuses is ``invalid_config``; a KMS away, ``service_unavailable``.
    """
    ring._follow()
    if tenant_id not in ring._tenants:
        ring._tenant_active(tenant_id)  # its first (plain) KEK
    entry = ring._tenants.get(tenant_id)
    if entry is None:
        raise EncryptionError("the tenant's keys are destroyed", details={"tenant_id": tenant_id})
    try:
        plain = {kek_id: (ring._byok_key(tenant_id, kek_id) if entry.kms else ring._key_of(kek_id))
                 for kek_id in entry.wrapped}
    except EncryptionError:  # a BYOK tenant whose key is closed now: the old key is asked, once
        await refresh(ring, kms, ttl)
        plain = {kek_id: ring._byok_key(tenant_id, kek_id) for kek_id in entry.wrapped}
    blobs: dict[str, bytes] = {}
    if kms_key is not None:
        await kms.refuse_platform_key(kms_key["key_id"])
        try:
            for kek_id, key in plain.items():
                context = _context(ring, tenant_id, kek_id)
                blobs[kek_id] = await kms.encrypt(kms_key["key_id"], key, context)
                if await kms.decrypt(kms_key["key_id"], blobs[kek_id], context) != key:
                    raise InvalidConfig("the KMS key does not give back what it encrypted",
                                        details={"field": "kms_key", "reason": "kms_refused"})
        except SealUnavailable as exc:
            raise ServiceUnavailable("the tenant's KMS key can't be used now",
                                     details={"field": "kms_key", "reason": exc.reason}) from None
        except SealFailure as exc:
            raise InvalidConfig("the KMS refused the tenant's key", details={"field": "kms_key",
                                                                            "reason": exc.reason}) from None
    with ring._changing():
        current = ring._tenants.get(tenant_id)
        if current is None or set(current.wrapped) != set(plain):
            raise ServiceUnavailable("the tenant's keys changed meanwhile: try again", details={"tenant_id": tenant_id})
        sk = ring._active
        current.wrapped = {k: (sk, _seal(ring._keys[sk], blobs[k] if kms_key else plain[k],
                                         ring._tenant_aad(tenant_id, k))) for k in plain}
        current.kms = {"type": "awskms", "key_id": kms_key["key_id"]} if kms_key else None
    ring._load()
    if kms_key is not None:
        ring._byok_open.update({k: (tenant_id, plain[k], blobs[k]) for k in plain})
        ring._byok_until[tenant_id] = time.monotonic() + ttl
        ring.byok_reason.pop(tenant_id, None)
    log.warning("tenant_kms_key_set", service=ring.service, tenant_id=tenant_id, byok=kms_key is not None)


async def watch(ring: ServiceKeyring, kms: TenantKms, interval: float, ttl: float) -> None:
    """The background check, every ``interval`` seconds, for the life of the service."""
    while True:
        try:
            await refresh(ring, kms, ttl)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a check that failed for another reason: said, tried again
            log.warning("tenant_kms_check_failed", service=ring.service, error=type(exc).__name__)
        await asyncio.sleep(interval)
