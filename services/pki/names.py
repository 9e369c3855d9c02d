"""Which names a role lets a certificate carry: DNS names, wildcards, IP addresses.

Every name is normalised first, and the normalised form is both what is
checked and what goes into the certificate (never the caller's spelling):
lower case, internationalised labels as IDNA 2008 A-labels (UTS #46 mapping,
so ``Bücher.example`` is ``xn--bcher-kva.example``), letters, digits and
hyphens only. Refused outright: a trailing dot, empty labels, a ``*``
anywhere but as the whole leftmost label, an IP address where a DNS name
belongs, and names past DNS's lengths.

A role's rules (Vault's): ``allowed_domains`` lists domains; a name equal to
one needs ``allow_bare_domains``; a name under one (``a.b.example.com`` under
``example.com``, on a label boundary) needs ``allow_subdomains``; a wildcard
``*.<x>`` needs ``allow_wildcards`` and ``<x>`` to be an allowed domain or
under one with ``allow_subdomains`` (the wildcard stands for a subdomain).
IP addresses need ``allow_ip_sans``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna

from shared.errors import DomainNotAllowed, ValidationError

MAX_NAME = 253
#: what an echo of a refused name may show of it
_ECHO = 260
_LDH_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
#: an ASCII host name needing no IDNA work: LDH labels, none with "--" in 3rd-4th place (A-labels go
#: through ``idna``, which checks their punycode)
_PLAIN_LABEL = r"(?![A-Za-z0-9]{2}--)(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_PLAIN = re.compile(rf"(?:{_PLAIN_LABEL}\.)*{_PLAIN_LABEL}")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class NameRules:
    """The parts of a role that decide names."""

    allowed_domains: tuple[str, ...]
    allow_subdomains: bool
    allow_wildcards: bool
    allow_bare_domains: bool
    allow_ip_sans: bool

    @functools.cached_property
    def domain_set(self) -> frozenset[str]:
        return frozenset(self.allowed_domains)


def _refuse(name: str, why: str) -> DomainNotAllowed:
    return DomainNotAllowed(f"the name is not allowed: {why}", details={"name": name[:_ECHO], "reason": why})


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def to_a_labels(name: str) -> str:
    """``name`` (no wildcard) as lower-case A-labels; ``ValueError`` saying why it is not a host name."""
    if not name:
        raise ValueError("empty")
    if len(name) > 4 * MAX_NAME:
        raise ValueError("too long")
    if name.endswith(".") or name.endswith("\u3002") or name.endswith("\uff0e") or name.endswith("\uff61"):
        raise ValueError("a trailing dot is not allowed")
    if "*" in name:
        raise ValueError("a wildcard is only allowed as the whole leftmost label")
    if _PLAIN.fullmatch(name):
        ascii_name = name.lower()  # letters, digits, hyphens, no "??--" label: IDNA would only lower-case it
    else:
        try:
            ascii_name = idna.encode(name, uts46=True, std3_rules=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise ValueError("not a valid host name (IDNA 2008)") from None
        ascii_name = ascii_name.lower()
    if len(ascii_name) > MAX_NAME:
        raise ValueError(f"longer than {MAX_NAME} characters")
    labels = ascii_name.split(".")
    if not all(_LDH_LABEL.fullmatch(label) for label in labels):
        raise ValueError("each label must be letters, digits and inner hyphens, 1-63 characters")
    if _is_ip(ascii_name):
        raise ValueError("an IP address is not a DNS name (use ip_sans)")
    return ascii_name


def normalize_dns(name: str) -> str:
    """A requested DNS name (``*.`` allowed in front) as it would go into a certificate."""
    if not isinstance(name, str):
        raise _refuse(str(name), "not a string")
    wildcard = name.startswith("*.")
    try:
        base = to_a_labels(name[2:] if wildcard else name)
    except ValueError as exc:
        raise _refuse(name, str(exc)) from None
    return f"*.{base}" if wildcard else base


def normalize_domains(domains: Iterable[str], field: str = "allowed_domains") -> tuple[str, ...]:
    """A role's ``allowed_domains``, each as A-labels (``validation_error`` naming a bad one)."""
    out: list[str] = []
    for domain in domains:
        try:
            out.append(to_a_labels(domain))
        except ValueError as exc:
            raise ValidationError.on(field, f"{domain[:80]!r}: {exc}") from None
    return tuple(dict.fromkeys(out))


def normalize_ip(text: str) -> IpAddress:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise _refuse(text, "not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise _refuse(text, "an address with a zone (%…) can't be in a certificate")
    return ip


def check_dns(rules: NameRules, name: str) -> str:
    """The normalised ``name`` if the role allows it, else ``domain_not_allowed``.

    The name's own suffixes are looked up among the allowed domains (a few set
    lookups), so a role of a thousand domains costs no more than a role of one.
    """
    normal = normalize_dns(name)
    wildcard = normal.startswith("*.")
    base = normal[2:] if wildcard else normal
    if wildcard and not rules.allow_wildcards:
        raise _refuse(normal, "the role does not allow wildcards")
    allowed = rules.domain_set
    if base in allowed and (rules.allow_subdomains if wildcard else rules.allow_bare_domains):
        return normal
    if rules.allow_subdomains:
        labels = base.split(".")
        if any(".".join(labels[i:]) in allowed for i in range(1, len(labels))):
            return normal
    raise _refuse(normal, "outside the role's allowed domains")


def check_ip(rules: NameRules, text: str | IpAddress) -> IpAddress:
    ip = text if isinstance(text, ipaddress.IPv4Address | ipaddress.IPv6Address) else normalize_ip(text)
    if not rules.allow_ip_sans:
        raise _refuse(str(ip), "the role does not allow IP addresses")
    return ip


@dataclass(frozen=True)
class CheckedNames:
    """What a certificate may carry, normalised: the subject CN, DNS SANs (the CN among them when it
    is a DNS name), IP SANs."""

    common_name: str
    dns: tuple[str, ...]
    ips: tuple[IpAddress, ...]


def check_names(rules: NameRules, common_name: str, alt_names: Iterable[str] = (),
                ip_sans: Iterable[str | IpAddress] = ()) -> CheckedNames:
    """The CN and every SAN against the role: all allowed, or ``domain_not_allowed`` for the first that isn't.

    A CN that is an IP address is checked (and carried) as an IP SAN.
    """
    dns: list[str] = []
    ips: list[IpAddress] = []
    if _is_ip(common_name):
        ips.append(check_ip(rules, common_name))
        cn = str(ips[0])
    else:
        cn = check_dns(rules, common_name)
        dns.append(cn)
    dns.extend(check_dns(rules, n) for n in alt_names)
    ips.extend(check_ip(rules, ip) for ip in ip_sans)
    return CheckedNames(cn, tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips)))
