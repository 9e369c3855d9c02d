"""``services.pki.x500``: what a certificate's name may hold, against what ``cryptography`` signs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.pki import x500
from shared.errors import ValidationError

KEY = ec.generate_private_key(ec.SECP256R1())


def sign_with(attribute: x509.NameAttribute[str]) -> x509.Certificate:
    name = x509.Name([attribute])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(KEY.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(KEY, hashes.SHA256()))


def refusal(field: str, value: str) -> str:
    with pytest.raises(ValidationError) as caught:
        x500.check(field, value)
    fields = caught.value.details["fields"]
    assert [f["field"] for f in fields] == [field]
    assert value not in fields[0]["message"] or len(value) < 3  # the value is not echoed
    return str(fields[0]["message"])


@pytest.mark.parametrize("field", sorted(x500.ATTRIBUTES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(st.text(max_size=70), st.text(st.characters(codec="utf-8"), max_size=300),
                       st.text(st.sampled_from("aZ9 'é\U0001d400\u0301\u202e\x00\x85-,"), max_size=140)))
def test_whatever_the_check_lets_through_cryptography_signs(field: str, value: str) -> None:
    """The property that keeps the 500 away: a value ``check`` accepts never makes ``cryptography`` raise,
    neither building the attribute nor encoding the certificate."""
    attribute = x500.ATTRIBUTES[field]
    if x500.problem(attribute, value) is None:
        cert = sign_with(x509.NameAttribute(attribute.oid, value))
        assert cert.subject.get_attributes_for_oid(attribute.oid)[0].value == value
        assert x500.name(**{field: value}) == cert.subject
    else:
        refusal(field, value)


def test_the_fuzzers_common_name_is_refused_for_its_bytes_not_its_characters() -> None:
    # what cryptography itself says: the bound is 64 bytes of UTF-8
    with pytest.raises(ValueError, match="length must be >= 1 and <= 64"):
        x509.NameAttribute(x500.ATTRIBUTES["common_name"].oid, "\U0001d400" * 17)
    assert "bytes" in refusal("common_name", "\U0001d400" * 17)
    assert x500.check("common_name", "\U0001d400" * 16) == "\U0001d400" * 16
    sign_with(x509.NameAttribute(x500.ATTRIBUTES["common_name"].oid, "\U0001d400" * 16))


@pytest.mark.parametrize(("field", "limit"), [("common_name", 64), ("organization", 64),
                                              ("organizational_unit", 64), ("locality", 128), ("state", 128),
                                              ("serial_number", 64), ("email_address", 255), ("title", 64),
                                              ("pseudonym", 128), ("postal_code", 40)])
def test_rfc_5280_upper_bounds_in_characters(field: str, limit: int) -> None:
    assert x500.check(field, "a" * limit) == "a" * limit
    assert "characters" in refusal(field, "a" * (limit + 1))
    assert "empty" in refusal(field, "")


def test_bounds_count_characters_where_cryptography_does_not_count_bytes() -> None:
    # an organization of 64 four-byte letters: 64 characters, 256 bytes, and cryptography signs it
    assert x500.check("organization", "\U0001d400" * 64)
    sign_with(x509.NameAttribute(x500.ATTRIBUTES["organization"].oid, "\U0001d400" * 64))
    assert "characters" in refusal("organization", "\U0001d400" * 65)


@pytest.mark.parametrize("value", ["US", "DE", "FR"])
def test_a_country_is_two_capital_letters(value: str) -> None:
    assert x500.check("country", value) == value


@pytest.mark.parametrize("value", ["us", "U", "USA", "U_", "é1", "Ü", "  ", "1A"])
def test_other_countries_are_refused(value: str) -> None:
    refusal("country", value)


def test_printable_and_ia5_strings_hold_their_alphabets_only() -> None:
    assert x500.check("serial_number", "ABC-123 (x)/4:5=6?") == "ABC-123 (x)/4:5=6?"
    assert "PrintableString" in refusal("serial_number", "a_b")
    assert "PrintableString" in refusal("serial_number", "é")
    with pytest.raises(ValueError):  # what cryptography does with it: only at encoding time
        sign_with(x509.NameAttribute(x500.ATTRIBUTES["serial_number"].oid, "a_b"))
    assert x500.check("email_address", "ops@example.com")
    assert "ASCII" in refusal("email_address", "ops@exämple.com")


@pytest.mark.parametrize("value", ["a\x00b", "a\x1b", "a\x7f", "a\x85", "\u202eabc", "a\u200e", "a\u2066b\u2069",
                                   "a\u061c", "a\u2028b", "a\u2029", "\ue000", "\U0010fffd", "\u0378", "\ufffe",
                                   "a\ud800"])
def test_controls_bidi_marks_separators_and_code_points_of_no_letter_are_refused(value: str) -> None:
    for field in ("common_name", "organization", "locality"):
        refusal(field, value)


@pytest.mark.parametrize("value", ["e\u0301", "\U0001f469\u200d\U0001f4bb", "שלום", "مرحبا", "日本", "\U00020000"])
def test_letters_beyond_ascii_and_the_bmp_combining_marks_and_joiners_are_names(value: str) -> None:
    assert x500.check("common_name", value) == value
    sign_with(x509.NameAttribute(x500.ATTRIBUTES["common_name"].oid, value))


def test_name_checks_every_value_naming_its_field() -> None:
    assert x500.name(common_name="Root", country="DE").rfc4514_string() == "C=DE,CN=Root"
    with pytest.raises(ValidationError) as caught:
        x500.name(common_name="Root", country="Deutschland")
    assert caught.value.details["fields"][0]["field"] == "country"
