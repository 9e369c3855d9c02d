"""Rules of secrets, without I/O: paths, types, values, metadata, expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.contracts.secrets import SECRET_TYPES, PutSecretBody
from shared.durations import parse_duration
from shared.errors import InvalidSecretType, ValidationError

MAX_VALUE_BYTES = 64 * 1024
MAX_METADATA_KEYS = 64
MAX_METADATA_KEY = 128
MAX_METADATA_VALUE = 1024


@dataclass(frozen=True)
class ValidWrite:
    """A write that passed every rule: the plaintext to seal and the version's metadata."""

    plaintext: bytes
    secret_type: str
    metadata: dict[str, str]
    expires_at: datetime | None


def _check_value(secret_type: str, value: object) -> bytes:
    if secret_type == "json":
        if not isinstance(value, dict):
            raise ValidationError.on("value", "a 'json' secret takes a JSON object")
        size_of = orjson.dumps(value)
    else:
        if not isinstance(value, str):
            raise ValidationError.on("value", f"a '{secret_type}' secret takes a string")
        size_of = value.encode("utf-8", "surrogatepass")
    if len(size_of) > MAX_VALUE_BYTES:
        raise ValidationError.on("value", f"value is larger than {MAX_VALUE_BYTES} bytes")
    if secret_type == "certificate":
        try:
            x509.load_pem_x509_certificate(size_of)
        except ValueError:
            raise ValidationError.on("value", "not a PEM X.509 certificate") from None
    elif secret_type == "private_key":
        try:
            serialization.load_pem_private_key(size_of, password=None)
        except TypeError:
            pass  # an encrypted PEM key: it is a key, we can't (and needn't) open it
        except (ValueError, Exception):  # noqa: BLE001 - unsupported algorithms raise others
            raise ValidationError.on("value", "not a PEM private key") from None
    return orjson.dumps(value)


def validate_write(body: PutSecretBody, now: datetime) -> ValidWrite:
    """Apply every rule of a secret write (api.md §5)."""
    if body.secret_type not in SECRET_TYPES:
        raise InvalidSecretType(
            "unknown secret_type", details={"secret_type": body.secret_type[:64], "allowed": list(SECRET_TYPES)})
    if len(body.metadata) > MAX_METADATA_KEYS:
        raise ValidationError.on("metadata", f"at most {MAX_METADATA_KEYS} keys")
    for key, val in body.metadata.items():
        if not key or len(key) > MAX_METADATA_KEY or len(val) > MAX_METADATA_VALUE:
            raise ValidationError.on(
                "metadata", f"keys 1–{MAX_METADATA_KEY} characters, values at most {MAX_METADATA_VALUE}")
    plaintext = _check_value(body.secret_type, body.value)
    if body.ttl is not None and body.expires_at is not None:
        raise ValidationError.on("ttl", "give either ttl or expires_at, not both")
    expires_at = body.expires_at
    if body.ttl is not None:
        expires_at = now + timedelta(seconds=parse_duration(body.ttl, field="ttl"))
    if expires_at is not None and expires_at <= now:
        raise ValidationError.on("expires_at", "must be in the future")
    return ValidWrite(plaintext, body.secret_type, dict(body.metadata), expires_at)


def value_of(plaintext: bytes) -> object:
    return orjson.loads(plaintext)


def associated_data(tenant_id: str, path: str, version: int) -> bytes:
    """What a version's ciphertext and data key are bound to: moved anywhere else, it won't open."""
    return b"\x00".join((b"coffer-secret-v1", tenant_id.encode(), path.encode(), str(version).encode()))

