"""Which names a role lets a certificate carry: a table of (role, CN, SANs) → the names carried, or refused.

The same rules answer through the gateway (tests/e2e/test_pki.py checks a
sample of them there); here every trick of spelling is a row.
"""

from __future__ import annotations

import ipaddress

import pytest

from services.pki.names import CheckedNames, NameRules, check_names, normalize_domains
from shared.errors import DomainNotAllowed, ValidationError

SUB = NameRules(("example.com",), allow_subdomains=True, allow_wildcards=False, allow_bare_domains=False,
                allow_ip_sans=False)
BARE = NameRules(("example.com",), False, False, True, False)
WILD = NameRules(("example.com",), True, True, False, False)
WILD_NO_SUB = NameRules(("example.com",), False, True, True, False)
IPS = NameRules(("example.com",), False, False, True, True)
IDN = NameRules(normalize_domains(["bücher.example"]), True, False, True, False)
MULTI = NameRules(("example.com", "example.org"), True, False, False, False)
NOTHING = NameRules((), True, True, True, False)

REFUSED = None

CASES = [
    # (rules, CN, alt names, IP SANs) → (CN, DNS names) as carried, or REFUSED
    (SUB, "www.example.com", [], [], ("www.example.com", ["www.example.com"])),
    (SUB, "a.b.example.com", [], [], ("a.b.example.com", ["a.b.example.com"])),
    (SUB, "example.com", [], [], REFUSED),                       # bare domain not allowed
    (BARE, "example.com", [], [], ("example.com", ["example.com"])),
    (BARE, "www.example.com", [], [], REFUSED),                  # subdomain not allowed
    (BARE, "EXAMPLE.COM", [], [], ("example.com", ["example.com"])),
    (SUB, "WWW.Example.COM", [], [], ("www.example.com", ["www.example.com"])),
    (SUB, "www.example.com.", [], [], REFUSED),                  # trailing dot
    (BARE, "example.com.", [], [], REFUSED),
    (SUB, "evilexample.com", [], [], REFUSED),                   # a suffix, not a subdomain
    (SUB, "example.com.evil.com", [], [], REFUSED),
    (SUB, "www.example.co", [], [], REFUSED),
    (SUB, "*.example.com", [], [], REFUSED),                     # wildcards not allowed
    (WILD, "*.example.com", [], [], ("*.example.com", ["*.example.com"])),
    (WILD, "*.www.example.com", [], [], ("*.www.example.com", ["*.www.example.com"])),
    (WILD, "w*.example.com", [], [], REFUSED),                   # partial wildcard label
    (WILD, "*w.example.com", [], [], REFUSED),
    (WILD, "*.*.example.com", [], [], REFUSED),
    (WILD, "www.*.example.com", [], [], REFUSED),
    (WILD, "*", [], [], REFUSED),
    (WILD, "*.com", [], [], REFUSED),
    (WILD, "*.", [], [], REFUSED),
    (WILD_NO_SUB, "*.example.com", [], [], REFUSED),             # a wildcard stands for subdomains
    (SUB, "www..example.com", [], [], REFUSED),                  # empty label
    (SUB, ".example.com", [], [], REFUSED),
    (SUB, "-www.example.com", [], [], REFUSED),                  # hyphen at a label's edge
    (SUB, "www-.example.com", [], [], REFUSED),
    (SUB, "ww_w.example.com", [], [], REFUSED),                  # not letters, digits, hyphens
    (SUB, "www.example.com\x00.evil.com", [], [], REFUSED),
    (SUB, "www example.com", [], [], REFUSED),
    (SUB, "www.example.com:443", [], [], REFUSED),
    (SUB, "www.example.com/x", [], [], REFUSED),
    (SUB, "www.ex\u0430mple.com", [], [], REFUSED),              # Cyrillic а: another domain
    (SUB, "www.example.com\u3002evil.com", [], [], REFUSED),     # ideographic full stop is a dot
    (SUB, "\uff37\uff37\uff37.example.com", [], [], ("www.example.com", ["www.example.com"])),  # full-width
    (SUB, "a" * 64 + ".example.com", [], [], REFUSED),           # a label past 63
    (SUB, ("a" * 60 + ".") * 4 + "example.com", [], [], REFUSED),  # a name past 253
    (SUB, "xn--zz.example.com", [], [], REFUSED),                # not valid punycode
    (IDN, "bücher.example", [], [], ("xn--bcher-kva.example", ["xn--bcher-kva.example"])),
    (IDN, "www.Bücher.example", [], [], ("www.xn--bcher-kva.example", ["www.xn--bcher-kva.example"])),
    (IDN, "xn--bcher-kva.example", [], [], ("xn--bcher-kva.example", ["xn--bcher-kva.example"])),
    (IDN, "bucher.example", [], [], REFUSED),
    (MULTI, "api.example.org", ["www.example.com"], [], ("api.example.org", ["api.example.org", "www.example.com"])),
    (MULTI, "api.example.org", ["www.example.net"], [], REFUSED),  # every SAN is checked
    (SUB, "www.example.com", ["*.example.com"], [], REFUSED),
    (SUB, "www.example.com", ["www.example.com", "WWW.example.com"], [], ("www.example.com", ["www.example.com"])),
    (NOTHING, "example.com", [], [], REFUSED),                   # no allowed domains: nothing
    (IPS, "10.0.0.1", [], [], ("10.0.0.1", [])),                 # an IP CN is an IP SAN
    (SUB, "10.0.0.1", [], [], REFUSED),
    (IPS, "example.com", [], ["::1", "192.0.2.7"], ("example.com", ["example.com"])),
    (SUB, "www.example.com", [], ["192.168.1.1"], REFUSED),      # IP SANs not allowed
    (IPS, "example.com", [], ["300.1.1.1"], REFUSED),
    (IPS, "example.com", [], ["010.0.0.1"], REFUSED),            # leading zeros: ambiguous
    (IPS, "example.com", [], ["fe80::1%eth0"], REFUSED),          # a zone is not an address
    (IPS, "example.com", ["10.0.0.1"], [], REFUSED),             # an IP where a DNS name belongs
    (IPS, "example.com", [], ["10.0.0.0/8"], REFUSED),
]


@pytest.mark.parametrize(("rules", "cn", "alt", "ips", "expected"), CASES,
                         ids=[f"{i}:{c[1][:30]!r}" for i, c in enumerate(CASES)])
def test_names_against_roles(rules: NameRules, cn: str, alt: list[str], ips: list[str],
                             expected: tuple[str, list[str]] | None) -> None:
    if expected is REFUSED:
        with pytest.raises(DomainNotAllowed) as info:
            check_names(rules, cn, alt, ips)
        assert info.value.status == 400 and info.value.code == "domain_not_allowed"
        assert len(info.value.details["name"]) <= 260
        return
    checked = check_names(rules, cn, alt, ips)
    assert isinstance(checked, CheckedNames)
    assert (checked.common_name, list(checked.dns)) == expected
    assert all(isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address) for ip in checked.ips)


def test_the_table_has_forty_cases_and_both_answers() -> None:
    assert len(CASES) >= 40
    assert {c[4] is REFUSED for c in CASES} == {True, False}


@pytest.mark.parametrize("domain", ["example.com.", "*.example.com", "", "a..b", "ex ample.com", "10.0.0.1"])
def test_a_role_refuses_allowed_domains_that_are_not_domains(domain: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_domains([domain])
    assert info.value.details["fields"][0]["field"] == "allowed_domains"


def test_allowed_domains_are_stored_as_a_labels_once() -> None:
    assert normalize_domains(["Bücher.example", "xn--bcher-kva.example", "EXAMPLE.com"]) == (
        "xn--bcher-kva.example", "example.com")
