"""Scopes, secret hashing, topic matching."""

from __future__ import annotations

import pytest

from services.gateway.iam.domain import (
    ALL_SCOPES,
    grant_scopes,
    hash_client_secret,
    hash_secret,
    new_client_secret,
    verify_secret,
)
from shared.bus import topic_matches
from shared.errors import InsufficientScope


def test_password_hash_is_salted_slow_and_verifies() -> None:
    h1, h2 = hash_secret("cs_secret"), hash_secret("cs_secret")
    assert h1 != h2 and "cs_secret" not in h1 and h1.startswith("scrypt$")
    assert verify_secret("cs_secret", h1) and not verify_secret("cs_secreT", h1)
    assert not verify_secret("x", "not-a-hash") and not verify_secret("x", "md5$1$2$3$4$5")


def test_generated_client_secrets_get_a_fast_hash_that_verifies_only_them() -> None:
    secret = new_client_secret()
    stored = hash_client_secret(secret)
    assert stored.startswith("sha256$") and secret not in stored and secret[3:] not in stored
    assert verify_secret(secret, stored)
    assert not verify_secret(secret[:-1] + ("A" if secret[-1] != "A" else "B"), stored)
    assert not verify_secret(secret, "sha256$" + "A" * 44)
    # the two schemes don't verify each other's output
    assert not verify_secret(secret, hash_secret("other")) and not verify_secret("other", stored)


def test_grant_scopes_defaults_to_all_allowed_and_narrows() -> None:
    assert grant_scopes(list(ALL_SCOPES), None) == ALL_SCOPES
    assert grant_scopes(["pki", "secrets:read"], ["pki"]) == ("pki",)
    with pytest.raises(InsufficientScope) as err:
        grant_scopes(["secrets:read"], ["secrets:read", "admin"])
    assert err.value.details == {"scopes": ["admin"]}


@pytest.mark.parametrize(
    ("pattern", "key", "match"),
    [
        ("secret.*", "secret.created", True), ("secret.*", "secret.a.b", False),
        ("#", "a.b.c", True), ("secret.#", "secret", True), ("*.created", "secret.created", True),
        ("a.#.z", "a.z", True), ("a.#.z", "a.b.c.z", True), ("a.#.z", "a.b.c", False),
        ("lease.expired", "lease.expired", True), ("lease.expired", "lease.expire", False),
    ],
)
def test_topic_matching_follows_amqp(pattern: str, key: str, match: bool) -> None:
    assert topic_matches(pattern, key) is match
