"""Rotation's pure rules: generated values, the policy a path follows, the next version's shape."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.secrets.rotation import CHARSETS, generate, matching_policy, rotated_write
from shared.errors import ValidationError


@pytest.mark.parametrize("charset", sorted(CHARSETS))
@pytest.mark.parametrize("length", [16, 33, 256])
def test_generated_values_have_the_length_and_charset(charset: str, length: int) -> None:
    values = {generate({"type": "api_key", "length": length, "charset": charset}) for _ in range(50)}
    assert len(values) == 50  # no repeats
    assert all(len(v) == length and set(v) <= set(CHARSETS[charset]) for v in values)


def test_a_password_holds_every_class_of_its_charset() -> None:
    for _ in range(200):
        value = generate({"type": "password", "length": 16})
        assert set(value) <= set(CHARSETS["ascii-printable"]) and " " not in value
        for cls in (string.ascii_lowercase, string.ascii_uppercase, string.digits, string.punctuation):
            assert any(c in cls for c in value)
    assert len(generate({"type": "password"})) == 32
    key = generate({"type": "api_key"})
    assert len(key) == 32 and set(key) <= set(string.ascii_letters + string.digits)


def test_the_longest_matching_pattern_wins_then_the_first_name() -> None:
    policies = [{"name": "b", "path_pattern": "app/**"}, {"name": "c", "path_pattern": "app/db/*"},
                {"name": "a", "path_pattern": "app/db/?"}, {"name": "z", "path_pattern": "app/db/*"}]
    assert matching_policy(policies, "app/db/main")["name"] == "c"  # type: ignore[index]
    assert matching_policy(policies, "app/db/x")["name"] == "a"  # type: ignore[index]  # a tie: the first name
    assert matching_policy(policies, "app/web")["name"] == "b"  # type: ignore[index]
    assert matching_policy(policies, "other/x") is None
    assert matching_policy([], "app") is None


def test_a_rotated_version_keeps_type_metadata_and_lifetime() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    now = created + timedelta(days=10)
    current = {"secret_type": "token", "metadata": {"owner": "a"}, "expires_at": created + timedelta(hours=2),
               "created_at": created}
    write = rotated_write(current, {"type": "api_key", "length": 20}, now)
    assert write.secret_type == "token" and write.metadata == {"owner": "a"}
    assert write.expires_at == now + timedelta(hours=2)
    assert write.value_length == 20 and len(orjson.loads(write.plaintext)) == 20
    assert rotated_write({**current, "expires_at": None}, {"type": "password"}, now).expires_at is None
    for kind in ("json", "certificate", "private_key", "ssh_key", "connection_string"):
        with pytest.raises(ValidationError) as err:
            rotated_write({**current, "secret_type": kind}, {"type": "password"}, now)
        assert err.value.details["rule"] == "secret_type"
