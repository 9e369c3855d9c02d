"""BYOK's KMS side on moto's server (shared/byok.py): the platform's own seal key is never a tenant's key, and a
tenant's KEKs wrapped by its key open only while the key is enabled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shared import byok
from shared.crypto import LocalKms, seal, unseal
from shared.errors import EncryptionError, InvalidConfig
from shared.handover import open_service_keyring
from tests.integration.test_seal_awskms import REGION, aws_credentials, kms_call, moto  # noqa: F401 - fixtures


async def _key(moto: str, alias: str | None = None) -> dict[str, Any]:  # noqa: F811
    answer: Any = await kms_call(moto, "create_key", KeyUsage="ENCRYPT_DECRYPT")
    if alias:
        await kms_call(moto, "create_alias", AliasName=alias, TargetKeyId=answer["KeyMetadata"]["KeyId"])
    return dict(answer["KeyMetadata"])


async def test_the_platforms_seal_key_is_refused_by_id_arn_or_alias(moto: str) -> None:  # noqa: F811
    platform = await _key(moto, "alias/coffer-seal")
    kms = byok.TenantKms(REGION, moto, platform_key=platform["KeyId"])
    for name in (platform["KeyId"], platform["Arn"], "alias/coffer-seal"):
        with pytest.raises(InvalidConfig) as caught:
            await kms.refuse_platform_key(name)
        assert caught.value.details == {"field": "kms_key", "reason": "platform_key"}
    await kms.refuse_platform_key((await _key(moto))["KeyId"])  # another key: fine


async def test_a_tenants_keks_follow_its_key(tmp_path: Path, moto: str) -> None:  # noqa: F811
    ring = open_service_keyring(LocalKms.load(tmp_path / "kms.key", create=True), tmp_path / "k", "secrets",
                                b"s" * 32)
    kms = byok.TenantKms(REGION, moto)
    key = await _key(moto)
    before = seal(ring.tenant("ten_a"), b"before", b"aad")
    await byok.set_key(ring, "ten_a", {"type": "awskms", "key_id": key["KeyId"]}, kms, ttl=60)
    assert unseal(ring.tenant("ten_a"), before, b"aad") == b"before"
    after = seal(ring.tenant("ten_a"), b"after", b"aad")
    # another process of the service: nothing opens until it has asked the KMS
    other = open_service_keyring(LocalKms.load(tmp_path / "kms.key"), tmp_path / "k", "secrets", b"s" * 32)
    with pytest.raises(EncryptionError):
        unseal(other.tenant("ten_a"), after, b"aad")
    assert await byok.refresh(other, kms, ttl=60) == {"ten_a": None}
    assert unseal(other.tenant("ten_a"), after, b"aad") == b"after"
    await kms_call(moto, "disable_key", KeyId=key["KeyId"])
    assert await byok.refresh(other, kms, ttl=60) == {"ten_a": "kms_unavailable"}
    with pytest.raises(EncryptionError) as caught:
        unseal(other.tenant("ten_a"), after, b"aad")
    assert caught.value.details["reason"] == "kms_unavailable"
    assert unseal(other.tenant("ten_b"), seal(other.tenant("ten_b"), b"b", b"aad"), b"aad") == b"b"
    await kms_call(moto, "enable_key", KeyId=key["KeyId"])
    assert await byok.refresh(other, kms, ttl=60) == {"ten_a": None}
    assert unseal(other.tenant("ten_a"), before, b"aad") == b"before"
    # a rotation keeps the BYOK tenant's KEK (re-wrapped only) and makes the others new ones
    other.rotate()
    assert unseal(other.tenant("ten_a"), after, b"aad") == b"after"
    # a deadline passed without an answer: closed too
    other._byok_until["ten_a"] = 0.0  # noqa: SLF001
    with pytest.raises(EncryptionError):
        unseal(other.tenant("ten_a"), after, b"aad")
