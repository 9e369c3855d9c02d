"""Rules of secrets, without I/O: paths, types, values, metadata, expiry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from shared.contracts.secrets import SECRET_TYPES, PutSecretBody
from shared.durations import parse_duration
from shared.errors import InvalidSecretType, ValidationError
from shared.globs import glob_matches

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
    #: a string value's length in characters (``None`` for a json secret): secret policies' min_length
    value_length: int | None = None


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
    return ValidWrite(plaintext, body.secret_type, dict(body.metadata), expires_at,
                      len(body.value) if isinstance(body.value, str) else None)


def _broken(policy: str, rule: str, message: str) -> ValidationError:
    """A write that breaks a secret policy: the policy and the rule named, the value never echoed."""
    return ValidationError(f"the write breaks secret policy '{policy}': {message}",
                           details={"policy": policy, "rule": rule, "fields": [{"field": rule, "message": message}]})


def check_policies(policies: Sequence[Mapping[str, Any]], path: str, write: ValidWrite, now: datetime) -> None:
    """Every rule of every policy whose ``path_pattern`` matches ``path`` (api.md §5.1)."""
    for policy in policies:
        if not glob_matches(policy["path_pattern"], path):
            continue
        name = policy["name"]
        if policy["allowed_types"] and write.secret_type not in policy["allowed_types"]:
            raise _broken(name, "allowed_types", f"type '{write.secret_type}' is not one of "
                                                 f"{', '.join(policy['allowed_types'])}")
        if policy["require_expiry"] and write.expires_at is None:
            raise _broken(name, "require_expiry", "an expires_at or a ttl is required")
        if policy["max_ttl"]:
            limit = parse_duration(policy["max_ttl"], field="max_ttl")
            if write.expires_at is None or (write.expires_at - now).total_seconds() > limit:
                raise _broken(name, "max_ttl", f"must expire within {policy['max_ttl']}")
        if policy["min_length"] and write.value_length is not None and write.value_length < policy["min_length"]:
            raise _broken(name, "min_length", f"the value must be at least {policy['min_length']} characters")


def value_of(plaintext: bytes) -> object:
    return orjson.loads(plaintext)


def associated_data(tenant_id: str, path: str, version: int) -> bytes:
    """What a version's ciphertext and data key are bound to: moved anywhere else, it won't open."""
    return b"\x00".join((b"coffer-secret-v1", tenant_id.encode(), path.encode(), str(version).encode()))

