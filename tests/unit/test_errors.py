"""The vocabulary in code matches the contract, and the docs match the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import shared.errors as errors
from shared.errors import REGISTRY, CofferError, envelope, from_wire, lookup
from shared.errors.__main__ import render

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT.parent / "shared" / "seed" / "error-codes.md"
#: the contract as of the last time it was copied in, for clones that don't sit beside ../shared
SEED_COPY = ROOT / "tests" / "fixtures" / "error-codes.seed.md"


def seed_table(path: Path) -> dict[str, int]:
    rows = re.findall(r"^\|\s*(\d{3})[^|]*\|\s*`([a-z_]+)`", path.read_text(), re.M)
    return {code: int(status) for status, code in rows}


def test_vocabulary_has_73_codes_each_with_a_class_status_and_meaning() -> None:
    assert len(REGISTRY) == 73
    for code, cls in REGISTRY.items():
        assert issubclass(cls, CofferError) and cls.code == code
        assert 400 <= cls.status <= 599
        assert (cls.__doc__ or "").strip(), code
        assert getattr(errors, cls.__name__) is cls  # exported by name


def test_every_code_and_status_matches_the_seed_contract() -> None:
    """Against ../shared/seed/error-codes.md when it is beside this clone, else against the copy of it."""
    if SEED.exists():
        assert SEED_COPY.read_text() == SEED.read_text(), "the contract changed: copy it to tests/fixtures/"
    assert {c: cls.status for c, cls in REGISTRY.items()} == seed_table(SEED if SEED.exists() else SEED_COPY)


def test_envelope_shape() -> None:
    err = errors.SecretNotFound("Secret 'a/b' not found", details={"path": "a/b"})
    assert envelope(err, "req_1") == {
        "error": {"code": "secret_not_found", "message": "Secret 'a/b' not found",
                  "details": {"path": "a/b"}, "request_id": "req_1"}
    }
    assert err.status == 404


@pytest.mark.parametrize(
    "wire",
    [{"code": "no_such_code", "message": "x"}, None, "oops", {"message": "no code"}, {"code": 5}],
)
def test_unknown_or_malformed_wire_errors_become_internal_error(wire: object) -> None:
    err = from_wire(wire)
    assert err.code == "internal_error" and err.status == 500


def test_known_wire_error_keeps_code_message_details() -> None:
    err = from_wire({"code": "version_conflict", "message": "m", "details": {"current": 3}})
    assert isinstance(err, errors.VersionConflict)
    assert (err.status, err.message, err.details) == (409, "m", {"current": 3})
    assert lookup("nope") is errors.InternalError


def test_retryable_flags_mark_transient_codes_only() -> None:
    retryable = {c for c, cls in REGISTRY.items() if cls.retryable}
    assert {"service_unavailable", "rate_limited", "backend_timeout"} <= retryable
    assert not retryable & {"secret_not_found", "token_invalid", "validation_error", "internal_error"}


def test_a_code_cannot_be_defined_twice() -> None:
    with pytest.raises(TypeError):
        type("Again", (CofferError,), {"code": "secret_not_found"})


def test_generated_docs_are_current() -> None:
    committed = (ROOT / "docs" / "error-codes.md").read_text()
    assert committed == render(), "docs/error-codes.md is stale: run `make docs`"


def test_retry_after_survives_the_wire_and_nothing_else_does() -> None:
    err = errors.BackendRateLimited("slow down", headers={"Retry-After": "17"})
    again = from_wire(err.to_wire())
    assert isinstance(again, errors.BackendRateLimited) and again.headers == {"Retry-After": "17"}
    forged = from_wire({"code": "backend_error", "message": "m", "headers": {
        "Retry-After": "soon", "Set-Cookie": "session=1", "Location": "https://evil.example"}})
    assert forged.headers == {}
    assert from_wire({"code": "backend_error", "headers": ["Retry-After", "1"]}).headers == {}


@pytest.mark.parametrize("cls", [errors.QuotaExceeded, errors.RateLimited])
def test_every_429_carries_retry_after(cls: type[CofferError]) -> None:
    assert cls().headers["Retry-After"].isdigit()
    assert cls(headers={"Retry-After": "5"}).headers["Retry-After"] == "5"
    assert from_wire(cls().to_wire()).headers["Retry-After"].isdigit()
