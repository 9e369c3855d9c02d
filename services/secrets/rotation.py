"""Rules of rotation, without I/O (api.md §5.2): generated values and which policy a path follows.

A rotated version keeps the secret's type, metadata and lifetime (an expiring
secret gets the same time-to-live again); only its value is new. Values come
from ``secrets.choice`` over the generator's charset. A ``password`` drawn from
``ascii-printable`` or ``alphanumeric`` holds every character class of that
charset (password rules of the systems such a password is handed to often demand
it); the draw is repeated until it does, which for 16+ characters is rare.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.secrets.domain import ValidWrite
from shared.errors import ValidationError
from shared.globs import glob_matches

#: what each charset draws from; ``ascii-printable`` leaves out the space (it gets trimmed on the way)
CHARSETS: dict[str, str] = {
    "alphanumeric": string.ascii_letters + string.digits,
    "ascii-printable": string.ascii_letters + string.digits + string.punctuation,
    "hex": "0123456789abcdef",
}
_CLASSES: dict[str, tuple[str, ...]] = {
    "alphanumeric": (string.ascii_lowercase, string.ascii_uppercase, string.digits),
    "ascii-printable": (string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation),
    "hex": (),
}
#: a generator's charset when it names none
DEFAULT_CHARSET = {"password": "ascii-printable", "api_key": "alphanumeric"}
#: the secret types a generated string may replace (a certificate, key or json can't be made up)
ROTATABLE_TYPES = ("generic", "password", "api_key", "token")


def generate(generator: Mapping[str, Any]) -> str:
    """A fresh value from ``{type, length, charset}``."""
    charset = generator.get("charset") or DEFAULT_CHARSET[generator["type"]]
    length = int(generator.get("length") or 32)
    alphabet = CHARSETS[charset]
    classes = _CLASSES[charset] if generator["type"] == "password" else ()
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(c in cls for c in value) for cls in classes):
            return value


def matching_policy(policies: Sequence[Mapping[str, Any]], path: str) -> Mapping[str, Any] | None:
    """The rotation policy ``path`` follows: of those whose pattern matches, the longest pattern (then the
    first name) wins."""
    best: Mapping[str, Any] | None = None
    for policy in policies:
        if not glob_matches(policy["path_pattern"], path):
            continue
        if best is None or (len(policy["path_pattern"]), best["name"]) > (len(best["path_pattern"]), policy["name"]):
            best = policy
    return best


def rotated_write(current: Mapping[str, Any], generator: Mapping[str, Any], now: datetime) -> ValidWrite:
    """The next version of ``current`` (its type, metadata, ``expires_at`` and ``created_at``): a new value."""
    secret_type = current["secret_type"]
    if secret_type not in ROTATABLE_TYPES:
        raise ValidationError.on(
            "secret_type", f"a '{secret_type}' secret can't take a generated value; "
                           f"rotation applies to {', '.join(ROTATABLE_TYPES)}", rule="secret_type")
    value = generate(generator)
    expires_at = None
    if current["expires_at"] is not None:
        lifetime = max(current["expires_at"] - current["created_at"], timedelta(seconds=1))
        expires_at = now + lifetime
    return ValidWrite(orjson.dumps(value), secret_type, dict(current["metadata"] or {}), expires_at, len(value))
