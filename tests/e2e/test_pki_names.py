"""What an X.509 name may hold, through the gateway in both run modes (issue #27 item 9).

``make fuzz`` found ``POST /v1/pki/cas`` answering 500 to a ``common_name``
of 4-byte letters: 64 characters by the contract's count, more than the 64
UTF-8 bytes ``cryptography`` lets a common name have. Every name value is now
checked before a key is made or anything signed, and refused with 422
``validation_error`` naming the field; a refusal stores nothing.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.platform import Platform
from tests.conftest import Api, free_port, initialised, own_platform
from tests.e2e.pki_helpers import make_ca, make_role, unique
from tests.e2e.test_gateway_envelope import assert_envelope

BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn,
                            http_port=free_port()) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def db(platform: Platform, pg_dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """One connection for the module's counts (the database is shared with every other test run)."""
    conn = await asyncpg.connect(pg_dsn)
    yield conn, platform.values["schema_prefix"] + "pki"
    await conn.close()


async def count(db: tuple[asyncpg.Connection, str], table: str) -> int:
    conn, schema = db
    return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".{table}'))


def refused_naming(status: int, body: Any, headers: Any, field: str) -> str:
    """A 422 ``validation_error`` whose one field is ``field``: its message."""
    err = assert_envelope(status, body, headers, "validation_error")
    fields = err["details"]["fields"]
    assert [f["field"] for f in fields] == [field], err
    return str(fields[0]["message"])


def subject_cn(pem: str) -> str:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def create_ca(api: Api, common_name: str) -> tuple[int, Any, Any]:
    return await api.request("POST", "/v1/pki/cas", json={"name": unique("ca-"), "common_name": common_name,
                                                          "key_type": "ec-p256", "ttl": "24h"})


async def test_a_common_name_of_four_byte_letters_is_refused_naming_it_and_nothing_is_stored(
        api: Api, db: tuple[asyncpg.Connection, str]) -> None:
    """The fuzzer's case: 17 letters of 4 bytes are 17 characters (the contract's 64 allow them) but 68 bytes,
    past what a certificate here can carry. It answered 500 ``internal_error``."""
    before = await count(db, "cas")
    status, body, headers = await create_ca(api, "\U0001d400" * 17)  # MATHEMATICAL BOLD CAPITAL A
    assert "bytes" in refused_naming(status, body, headers, "common_name")
    assert await count(db, "cas") == before
    # 16 of them are 64 bytes: a common name like any other, carried as given
    status, ca, _ = await create_ca(api, "\U0001d400" * 16)
    assert status == 201, ca
    assert ca["common_name"] == "\U0001d400" * 16 == subject_cn(ca["certificate"])


#: (common name, accepted): at the bounds in characters and in bytes, and what no name should hold
CASES: list[tuple[str, bool]] = [
    ("a" * 64, True), ("a" * 65, False),  # ub-common-name, in characters
    ("é" * 32, True), ("é" * 33, False),  # 64 and 66 bytes
    ("e\u0301" * 21, True), ("e\u0301" * 22, False),  # combining marks: 63 and 66 bytes
    ("\U0001f469\u200d\U0001f4bb CA", True),  # a ZWJ sequence
    ("שלום עולם CA", True), ("مرحبا", True), ("日本語の認証局", True),  # right-to-left and CJK letters
    ("\u202eAC tooR", False), ("Root\u200f", False), ("\u2066Root\u2069", False),  # bidi controls
    ("a\x00b", False), ("Root\x07", False), ("Root\x1b[31m", False), ("Root\x85", False), ("Root\x7f", False),
    ("Line\u2028Two", False), ("Para\u2029", False),  # separators
    ("\ue000Root", False), ("\U000f0000", False),  # private use
    ("Root\u0378", False), ("\ufffe", False),  # unassigned, a non-character
    (" ", True), ("Root, O=Evil", True),  # a value is a value: escaped when written as a string
]


@pytest.mark.parametrize(("common_name", "accepted"), CASES, ids=[ascii(c)[:40] for c, _ in CASES])
async def test_ca_common_names_at_the_bounds_and_past_them(api: Api, db: tuple[asyncpg.Connection, str],
                                                           common_name: str, accepted: bool) -> None:
    before = await count(db, "cas")
    status, body, headers = await create_ca(api, common_name)
    if accepted:
        assert status == 201, body
        assert body["common_name"] == common_name == subject_cn(body["certificate"])
        assert await count(db, "cas") == before + 1
    else:
        refused_naming(status, body, headers, "common_name")
        assert await count(db, "cas") == before


#: what odd strings are made of: 4-byte letters, combining marks, joiners, controls, bidi marks, CJK
ALPHABET = ["a", "Z", "7", " ", "-", ".", ",", "=", "\\", "é", "ß", "ı", "\u0301", "\u0308", "\u200d", "\u200b",
            "\U0001d400", "\U0001f600", "\U00020000", "\U0001f1eb", "中", "ア", "ㄱ", "ש", "ب", "\u0649",
            "\x00", "\x01", "\x1f", "\x7f", "\x9b", "\u202e", "\u200f", "\u2066", "\u061c", "\u2028",
            "\ufeff", "\ue000", "\ufffd", "\U000e0041", "\u0378"]


def odd_strings(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([1, 2, 16, 17, 21, 22, 32, 33, 63, 64])
        out.append("".join(rng.choice(ALPHABET) for _ in range(length)))
    return out


def signable(value: str) -> bool:
    return (len(value.encode()) <= 64 and not any(unicodedata.category(c) in ("Cc", "Cn", "Co", "Cs", "Zl", "Zp")
                                                  or c in BIDI for c in value))


async def test_odd_unicode_never_answers_500_and_a_refusal_stores_nothing(
        api: Api, db: tuple[asyncpg.Connection, str]) -> None:
    """Many odd common names, through every way a name reaches the PKI: a CA's, ``:issue``'s, a CSR's.
    Never a 5xx; a CA is made exactly when its name can be carried as given, and then carries it."""
    ca = await make_ca(api)
    role = await make_role(api, ca["id"], allowed_domains=["example.com"], allow_subdomains=True)
    cas, certificates, csrs = [await count(db, t) for t in ("cas", "certificates", "csrs")]
    made = issued = submitted = 0
    for value in odd_strings(7, 60):
        status, body, headers = await create_ca(api, value)
        assert status in (201, 422), (value, body)
        assert (status == 201) == signable(value), (value, body)
        if status == 201:
            made += 1
            assert body["common_name"] == value == subject_cn(body["certificate"])
        else:
            refused_naming(status, body, headers, "common_name")
        for name in (value, f"{value}.example.com"):
            status, body, headers = await api.request("POST", f"/v1/pki/roles/{role}:issue",
                                                      json={"common_name": name, "alt_names": [name]})
            assert status < 500, (name, body)
            if status == 201:  # a host name after all (UTS #46 maps 𝐀 to a): carried as its A-labels
                issued += 1
                assert subject_cn(body["certificate"]).isascii()
            else:
                assert_envelope(status, body, headers, body["error"]["code"])
                assert body["error"]["code"] in ("validation_error", "domain_not_allowed"), body
        if "\x00" in value:
            continue  # no CSR can be built of it
        try:
            attribute = x509.NameAttribute(NameOID.COMMON_NAME, f"{value}.example.com")
        except ValueError:
            continue  # nor of a name past 64 bytes
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([attribute]))
               .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
        for path, body_json in ((f"/v1/pki/roles/{role}:sign", {"csr": csr}),
                                ("/v1/pki/csrs", {"csr": csr, "role": role})):
            status, body, headers = await api.request("POST", path, json=body_json)
            assert status < 500, (value, body)
            if status == 201:
                issued += path.endswith(":sign")
                submitted += path.endswith("csrs")
            else:
                assert_envelope(status, body, headers, body["error"]["code"])
                assert body["error"]["code"] in ("csr_invalid", "domain_not_allowed", "validation_error"), body
    assert made > 0
    assert await count(db, "cas") == cas + made
    assert await count(db, "certificates") == certificates + issued
    assert await count(db, "csrs") == csrs + submitted


async def test_odd_unicode_in_a_roles_domains_is_refused_naming_them_or_kept_as_a_labels(
        api: Api, db: tuple[asyncpg.Connection, str]) -> None:
    """A role's ``allowed_domains`` are names too: each is a host name (kept as its A-labels) or the role is
    refused with 422 naming ``allowed_domains``. Never a 5xx, and a refused role is not stored."""
    ca = await make_ca(api)
    roles = await count(db, "roles")
    made = 0
    for value in odd_strings(11, 40):
        name = unique("role-")
        status, body, headers = await api.request("PUT", f"/v1/pki/roles/{name}", json={
            "ca_id": ca["id"], "allowed_domains": [f"{value}.example.com"]})
        assert status in (201, 422), (value, body)
        if status == 201:
            made += 1
            assert all(d.isascii() for d in body["allowed_domains"]), body
        else:  # the list, or its item (the gateway names where a NUL is: allowed_domains.0)
            err = assert_envelope(status, body, headers, "validation_error")
            assert [f["field"].split(".")[0] for f in err["details"]["fields"]] == ["allowed_domains"], err
    assert await count(db, "roles") == roles + made
