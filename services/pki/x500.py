"""What an X.509 name attribute may hold, checked before anything is signed.

Every value the PKI puts into a certificate's subject goes through ``check``
(the handlers, to answer ``validation_error`` naming the field before a key
is made) and again through ``name`` (the builders, so no ``x509.Name`` is
made of an unchecked value). A value is refused, never altered.

The bounds are RFC 5280's (Appendix A, ``ub-*``), counted in characters,
and the string types its profile gives each attribute. ``cryptography``
adds bounds of its own, counted in UTF-8 *bytes*: a common name of at most
64 bytes and a country of exactly 2 (``ValueError`` from ``NameAttribute``),
so a common name of 17 four-byte letters, 64 characters by RFC 5280's count,
can't be signed at all. Both counts apply where both exist. A
``PrintableString`` (country, serial number) or ``IA5String`` (e-mail,
domain component) holding another character fails only when the
certificate is encoded (``ValueError: error parsing asn1 value``), so their
alphabets are checked here too.

Refused in every value, as nothing a person or a relying party should meet
in a name: control characters (C0, DEL, C1: NUL-prefix certificates),
unpaired surrogates (not encodable), unassigned and private-use code points,
line and paragraph separators, and the bidirectional formatting characters
(U+061C, U+200E/F, U+202A-E, U+2066-9) that make a name read otherwise than
it is stored. Letters outside the BMP, combining marks and joiners are
allowed within the bounds.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from shared.errors import ValidationError

StringType = Literal["utf8", "printable", "ia5"]

#: X.680's PrintableString alphabet
_PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")
_REFUSED_CATEGORIES = {"Cc": "control characters", "Cs": "unpaired surrogates",
                       "Cn": "unassigned code points", "Co": "private-use code points",
                       "Zl": "line separators", "Zp": "paragraph separators"}
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class Attribute:
    """One attribute type of a name: its OID, RFC 5280's upper bound in characters, its string type,
    and ``cryptography``'s bound in UTF-8 bytes where it has one."""

    oid: x509.ObjectIdentifier
    max_chars: int
    string: StringType = "utf8"
    min_chars: int = 1
    max_bytes: int | None = None
    #: a grammar narrower than the string type's alphabet (a country code)
    pattern: re.Pattern[str] | None = None
    grammar: str = ""


#: the attributes the PKI may write, by the name an API field would give them (RFC 5280 Appendix A)
ATTRIBUTES: dict[str, Attribute] = {
    "common_name": Attribute(NameOID.COMMON_NAME, 64, max_bytes=64),  # ub-common-name
    "organization": Attribute(NameOID.ORGANIZATION_NAME, 64),  # ub-organization-name
    "organizational_unit": Attribute(NameOID.ORGANIZATIONAL_UNIT_NAME, 64),  # ub-organizational-unit-name
    "country": Attribute(NameOID.COUNTRY_NAME, 2, "printable", min_chars=2, max_bytes=2,
                         pattern=re.compile(r"[A-Z]{2}"), grammar="an ISO 3166 code: two capital letters"),
    "locality": Attribute(NameOID.LOCALITY_NAME, 128),  # ub-locality-name
    "state": Attribute(NameOID.STATE_OR_PROVINCE_NAME, 128),  # ub-state-name
    "street_address": Attribute(NameOID.STREET_ADDRESS, 128),  # X.520 ub-street-address
    "postal_code": Attribute(NameOID.POSTAL_CODE, 40),  # X.520 ub-postal-code
    "title": Attribute(NameOID.TITLE, 64),  # ub-title
    "serial_number": Attribute(NameOID.SERIAL_NUMBER, 64, "printable"),  # ub-serial-number
    "pseudonym": Attribute(NameOID.PSEUDONYM, 128),  # ub-pseudonym
    "given_name": Attribute(NameOID.GIVEN_NAME, 32768),  # ub-name
    "surname": Attribute(NameOID.SURNAME, 32768),  # ub-name
    "email_address": Attribute(NameOID.EMAIL_ADDRESS, 255, "ia5"),  # ub-emailaddress-length
    "domain_component": Attribute(NameOID.DOMAIN_COMPONENT, 63, "ia5"),  # one DNS label
}


def problem(attribute: Attribute, value: object) -> str | None:
    """Why ``value`` can't be ``attribute`` in a certificate's name, or ``None`` when it can."""
    if not isinstance(value, str):
        return "must be a string"
    chars = len(value)
    if chars < attribute.min_chars:
        return "must not be empty" if attribute.min_chars == 1 else f"exactly {attribute.min_chars} characters"
    if chars > attribute.max_chars:
        return f"at most {attribute.max_chars} characters (RFC 5280)"
    for char in value:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            return f"{_REFUSED_CATEGORIES[category]} are not allowed (U+{ord(char):04X})"
        if char in _BIDI_CONTROLS:
            return f"bidirectional formatting characters are not allowed (U+{ord(char):04X})"
    if attribute.max_bytes is not None and len(value.encode("utf-8")) > attribute.max_bytes:
        return (f"at most {attribute.max_bytes} bytes in UTF-8, as certificates are built here "
                f"(a character outside the BMP counts 4)")
    if attribute.pattern is not None and not attribute.pattern.fullmatch(value):
        return attribute.grammar
    if attribute.string == "printable" and not _PRINTABLE.fullmatch(value):
        return "letters, digits, space and ' ( ) + , - . / : = ? only (PrintableString)"
    if attribute.string == "ia5" and not value.isascii():
        return "ASCII only (IA5String)"
    return None


def check(field: str, value: str, attribute: str | None = None) -> str:
    """``value`` when a name may carry it as ``attribute`` (by default the attribute ``field`` is named
    after); else ``validation_error`` naming ``field``, the value not echoed."""
    why = problem(ATTRIBUTES[attribute or field], value)
    if why is not None:
        raise ValidationError.on(field, why)
    return value


def name(**values: str) -> x509.Name:
    """The ``x509.Name`` of ``values`` (attribute names of ``ATTRIBUTES``, in the order given), each checked."""
    return x509.Name([x509.NameAttribute(ATTRIBUTES[key].oid, check(key, value)) for key, value in values.items()])
