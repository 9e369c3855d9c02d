"""The policy decision, table-driven: (rules, path, capability, ip, time, mfa_at) → decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.gateway.iam.policy import client_address, decide, parse_rules
from shared.errors import CofferError
from shared.globs import compile_glob, glob_matches

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday; 11:00 in Berlin, 05:00 in New York


def allow(paths: list[str], caps: list[str], **cond: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"effect": "allow", "paths": paths, "capabilities": caps}
    if cond:
        rule["conditions"] = cond
    return rule


def deny(paths: list[str], caps: list[str], **cond: Any) -> dict[str, Any]:
    return {**allow(paths, caps, **cond), "effect": "deny"}


PROD_RO = allow(["secrets/environments/production/**"], ["read", "list"])
OFFICE = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00",
           "timezone": "Europe/Berlin"}]
NIGHT = [{"days": ["fri"], "start": "22:00", "end": "02:00", "timezone": "UTC"}]
NY = [{"days": ["sun"], "start": "01:00", "end": "04:00", "timezone": "America/New_York"}]
BERLIN_EARLY = [{"days": ["sun"], "start": "02:00", "end": "03:30", "timezone": "Europe/Berlin"}]

# (id, rules, resource, capability, ip, now, mfa_at, expected)  expected: "allow" or an error code
CASES: list[tuple[str, list[dict[str, Any]], str, str, str | None, datetime, datetime | None, str]] = [
    # -- globs: ** vs * vs ? vs classes
    ("dstar-deep", [PROD_RO], "secrets/environments/production/db/password", "read", None, NOW, None, "allow"),
    ("dstar-one", [PROD_RO], "secrets/environments/production/x", "read", None, NOW, None, "allow"),
    ("dstar-zero", [PROD_RO], "secrets/environments/production", "read", None, NOW, None, "allow"),
    ("dstar-other-env", [PROD_RO], "secrets/environments/staging/x", "read", None, NOW, None, "access_denied"),
    ("dstar-prefix-trick", [PROD_RO], "secrets/environments/production-eu/x", "read", None, NOW, None,
     "access_denied"),
    ("cap-missing", [PROD_RO], "secrets/environments/production/x", "write", None, NOW, None, "access_denied"),
    ("star-one-seg", [allow(["secrets/apps/*/config"], ["read"])], "secrets/apps/web/config", "read", None, NOW,
     None, "allow"),
    ("star-not-two", [allow(["secrets/apps/*/config"], ["read"])], "secrets/apps/web/eu/config", "read", None,
     NOW, None, "access_denied"),
    ("star-not-empty-seg", [allow(["secrets/apps/*"], ["read"])], "secrets/apps", "read", None, NOW, None,
     "access_denied"),
    ("star-in-segment", [allow(["secrets/db-*"], ["read"])], "secrets/db-main", "read", None, NOW, None, "allow"),
    ("star-in-seg-no-slash", [allow(["secrets/db-*"], ["read"])], "secrets/db-main/x", "read", None, NOW, None,
     "access_denied"),
    ("qmark", [allow(["secrets/k?"], ["read"])], "secrets/k1", "read", None, NOW, None, "allow"),
    ("qmark-two", [allow(["secrets/k?"], ["read"])], "secrets/k12", "read", None, NOW, None, "access_denied"),
    ("class", [allow(["secrets/[abc]x"], ["read"])], "secrets/bx", "read", None, NOW, None, "allow"),
    ("class-miss", [allow(["secrets/[abc]x"], ["read"])], "secrets/dx", "read", None, NOW, None, "access_denied"),
    ("class-range", [allow(["secrets/v[0-9]"], ["read"])], "secrets/v7", "read", None, NOW, None, "allow"),
    ("class-negated", [allow(["secrets/[!a]x"], ["read"])], "secrets/bx", "read", None, NOW, None, "allow"),
    ("class-negated-miss", [allow(["secrets/[!a]x"], ["read"])], "secrets/ax", "read", None, NOW, None,
     "access_denied"),
    ("dstar-middle", [allow(["secrets/**/password"], ["read"])], "secrets/a/b/c/password", "read", None, NOW,
     None, "allow"),
    ("dstar-middle-zero", [allow(["secrets/**/password"], ["read"])], "secrets/password", "read", None, NOW, None,
     "allow"),
    ("dstar-middle-miss", [allow(["secrets/**/password"], ["read"])], "secrets/a/passwords", "read", None, NOW,
     None, "access_denied"),
    ("everything", [allow(["**"], ["read"])], "pki/cas/ca_1", "read", None, NOW, None, "allow"),
    ("literal-dot", [allow(["secrets/a.b"], ["read"])], "secrets/aXb", "read", None, NOW, None, "access_denied"),
    ("no-rules-match-other-area", [PROD_RO], "pki/roles/web", "read", None, NOW, None, "access_denied"),
    # -- deny wins, overlapping rules
    ("deny-wins", [allow(["secrets/**"], ["read"]), deny(["secrets/prod/**"], ["read"])], "secrets/prod/db",
     "read", None, NOW, None, "access_denied"),
    ("deny-order-irrelevant", [deny(["secrets/prod/**"], ["read"]), allow(["secrets/**"], ["read"])],
     "secrets/prod/db", "read", None, NOW, None, "access_denied"),
    ("deny-other-cap", [allow(["secrets/**"], ["read", "write"]), deny(["secrets/prod/**"], ["write"])],
     "secrets/prod/db", "read", None, NOW, None, "allow"),
    ("deny-other-path", [allow(["secrets/**"], ["read"]), deny(["secrets/prod/**"], ["read"])],
     "secrets/dev/db", "read", None, NOW, None, "allow"),
    ("overlap-union", [allow(["secrets/a/**"], ["read"]), allow(["secrets/b/**"], ["write"])], "secrets/b/x",
     "write", None, NOW, None, "allow"),
    ("overlap-caps-separate", [allow(["secrets/a/**"], ["read"]), allow(["secrets/b/**"], ["write"])],
     "secrets/a/x", "write", None, NOW, None, "access_denied"),
    ("deny-with-ip-condition-applies", [allow(["**"], ["read"]),
                                        deny(["secrets/**"], ["read"], ip_ranges=["203.0.113.0/24"])],
     "secrets/x", "read", "203.0.113.9", NOW, None, "access_denied"),
    ("deny-with-ip-condition-not", [allow(["**"], ["read"]),
                                    deny(["secrets/**"], ["read"], ip_ranges=["203.0.113.0/24"])],
     "secrets/x", "read", "198.51.100.1", NOW, None, "allow"),
    ("empty-rules-list-denies", [], "secrets/x", "read", None, NOW, None, "access_denied"),
    # -- ip ranges, IPv4 and IPv6
    ("ip-in", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"])], "secrets/x", "read", "10.1.2.3", NOW, None,
     "allow"),
    ("ip-out", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"])], "secrets/x", "read", "11.1.2.3", NOW, None,
     "ip_not_allowed"),
    ("ip-unknown", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"])], "secrets/x", "read", None, NOW, None,
     "ip_not_allowed"),
    ("ipv6-in", [allow(["**"], ["read"], ip_ranges=["2001:db8::/32"])], "secrets/x", "read", "2001:db8::5", NOW,
     None, "allow"),
    ("ipv6-out", [allow(["**"], ["read"], ip_ranges=["2001:db8::/32"])], "secrets/x", "read", "2001:db9::5",
     NOW, None, "ip_not_allowed"),
    ("ipv4-vs-v6-range", [allow(["**"], ["read"], ip_ranges=["2001:db8::/32"])], "secrets/x", "read", "10.0.0.1",
     NOW, None, "ip_not_allowed"),
    ("ipv4-mapped", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"])], "secrets/x", "read", "::ffff:10.0.0.7",
     NOW, None, "allow"),
    ("ip-mixed-list", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8", "2001:db8::/32"])], "secrets/x", "read",
     "2001:db8:1::1", NOW, None, "allow"),
    ("ip-single-host", [allow(["**"], ["read"], ip_ranges=["192.0.2.10/32"])], "secrets/x", "read", "192.0.2.11",
     NOW, None, "ip_not_allowed"),
    ("ip-second-rule-passes", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"]), allow(["secrets/**"], ["read"])],
     "secrets/x", "read", "8.8.8.8", NOW, None, "allow"),
    # -- time windows, zones, midnight, DST
    ("office-in", [allow(["**"], ["read"], time_windows=OFFICE)], "secrets/x", "read", None, NOW, None, "allow"),
    ("office-before", [allow(["**"], ["read"], time_windows=OFFICE)], "secrets/x", "read", None,
     datetime(2026, 11, 25, 6, 59, tzinfo=UTC), None, "time_window_violation"),  # 07:59 Berlin
    ("office-at-start", [allow(["**"], ["read"], time_windows=OFFICE)], "secrets/x", "read", None,
     datetime(2026, 11, 25, 7, 0, tzinfo=UTC), None, "allow"),  # 08:00 Berlin
    ("office-at-end", [allow(["**"], ["read"], time_windows=OFFICE)], "secrets/x", "read", None,
     datetime(2026, 11, 25, 17, 0, tzinfo=UTC), None, "time_window_violation"),  # 18:00 Berlin: end excluded
    ("office-weekend", [allow(["**"], ["read"], time_windows=OFFICE)], "secrets/x", "read", None,
     datetime(2026, 11, 28, 10, 0, tzinfo=UTC), None, "time_window_violation"),  # Saturday
    ("office-summer-time", [allow(["**"], ["read"], time_windows=OFFICE)], "secrets/x", "read", None,
     datetime(2026, 7, 1, 6, 30, tzinfo=UTC), None, "allow"),  # 08:30 CEST
    ("office-summer-before", [allow(["**"], ["read"], time_windows=OFFICE)], "secrets/x", "read", None,
     datetime(2026, 7, 1, 5, 30, tzinfo=UTC), None, "time_window_violation"),  # 07:30 CEST
    ("midnight-fri-late", [allow(["**"], ["read"], time_windows=NIGHT)], "secrets/x", "read", None,
     datetime(2026, 11, 27, 23, 0, tzinfo=UTC), None, "allow"),  # Fri 23:00
    ("midnight-sat-early", [allow(["**"], ["read"], time_windows=NIGHT)], "secrets/x", "read", None,
     datetime(2026, 11, 28, 1, 59, tzinfo=UTC), None, "allow"),  # Sat 01:59, window began Fri
    ("midnight-sat-after", [allow(["**"], ["read"], time_windows=NIGHT)], "secrets/x", "read", None,
     datetime(2026, 11, 28, 2, 0, tzinfo=UTC), None, "time_window_violation"),
    ("midnight-thu-late", [allow(["**"], ["read"], time_windows=NIGHT)], "secrets/x", "read", None,
     datetime(2026, 11, 26, 23, 0, tzinfo=UTC), None, "time_window_violation"),  # Thursday
    ("midnight-fri-early", [allow(["**"], ["read"], time_windows=NIGHT)], "secrets/x", "read", None,
     datetime(2026, 11, 27, 1, 0, tzinfo=UTC), None, "time_window_violation"),  # Fri 01:00 belongs to Thu
    # Europe/Berlin springs forward 2026-03-29 02:00 → 03:00 (01:00 UTC); 02:00–03:30 wall clock has 30 real minutes
    ("berlin-dst-spring-before", [allow(["**"], ["read"], time_windows=BERLIN_EARLY)], "secrets/x", "read", None,
     datetime(2026, 3, 29, 0, 59, tzinfo=UTC), None, "time_window_violation"),  # 01:59 CET
    ("berlin-dst-spring-in", [allow(["**"], ["read"], time_windows=BERLIN_EARLY)], "secrets/x", "read", None,
     datetime(2026, 3, 29, 1, 10, tzinfo=UTC), None, "allow"),  # 03:10 CEST
    ("berlin-dst-spring-after", [allow(["**"], ["read"], time_windows=BERLIN_EARLY)], "secrets/x", "read", None,
     datetime(2026, 3, 29, 1, 30, tzinfo=UTC), None, "time_window_violation"),  # 03:30 CEST
    # Europe/Berlin falls back 2026-10-25 03:00 → 02:00: 02:00–03:00 wall clock happens twice
    ("berlin-dst-autumn-first", [allow(["**"], ["read"], time_windows=BERLIN_EARLY)], "secrets/x", "read", None,
     datetime(2026, 10, 25, 0, 30, tzinfo=UTC), None, "allow"),  # 02:30 CEST
    ("berlin-dst-autumn-second", [allow(["**"], ["read"], time_windows=BERLIN_EARLY)], "secrets/x", "read", None,
     datetime(2026, 10, 25, 1, 30, tzinfo=UTC), None, "allow"),  # 02:30 CET, again
    ("berlin-dst-autumn-late", [allow(["**"], ["read"], time_windows=BERLIN_EARLY)], "secrets/x", "read", None,
     datetime(2026, 10, 25, 2, 45, tzinfo=UTC), None, "time_window_violation"),  # 03:45 CET
    # America/New_York springs forward 2026-03-08 02:00 → 03:00 (07:00 UTC)
    ("ny-dst-spring-in-est", [allow(["**"], ["read"], time_windows=NY)], "secrets/x", "read", None,
     datetime(2026, 3, 8, 6, 30, tzinfo=UTC), None, "allow"),  # 01:30 EST
    ("ny-dst-spring-in-edt", [allow(["**"], ["read"], time_windows=NY)], "secrets/x", "read", None,
     datetime(2026, 3, 8, 7, 30, tzinfo=UTC), None, "allow"),  # 03:30 EDT
    ("ny-dst-spring-after", [allow(["**"], ["read"], time_windows=NY)], "secrets/x", "read", None,
     datetime(2026, 3, 8, 8, 0, tzinfo=UTC), None, "time_window_violation"),  # 04:00 EDT
    # America/New_York falls back 2026-11-01 02:00 → 01:00 (06:00 UTC)
    ("ny-dst-autumn-first", [allow(["**"], ["read"], time_windows=NY)], "secrets/x", "read", None,
     datetime(2026, 11, 1, 5, 30, tzinfo=UTC), None, "allow"),  # 01:30 EDT
    ("ny-dst-autumn-second", [allow(["**"], ["read"], time_windows=NY)], "secrets/x", "read", None,
     datetime(2026, 11, 1, 6, 30, tzinfo=UTC), None, "allow"),  # 01:30 EST
    ("ny-dst-autumn-before", [allow(["**"], ["read"], time_windows=NY)], "secrets/x", "read", None,
     datetime(2026, 11, 1, 4, 59, tzinfo=UTC), None, "time_window_violation"),  # 00:59 EDT
    ("until-midnight", [allow(["**"], ["read"], time_windows=[{"days": ["wed"], "start": "20:00", "end": "24:00",
                                                                "timezone": "UTC"}])],
     "secrets/x", "read", None, datetime(2026, 11, 25, 23, 59, tzinfo=UTC), None, "allow"),
    # -- mfa
    ("mfa-fresh", [allow(["**"], ["read"], mfa={"max_age": "15m"})], "secrets/x", "read", None, NOW,
     NOW - timedelta(minutes=5), "allow"),
    ("mfa-stale", [allow(["**"], ["read"], mfa={"max_age": "15m"})], "secrets/x", "read", None, NOW,
     NOW - timedelta(minutes=16), "mfa_required"),
    ("mfa-never", [allow(["**"], ["read"], mfa={"max_age": "15m"})], "secrets/x", "read", None, NOW, None,
     "mfa_required"),
    # -- several conditions: the first failed one is named
    ("ip-then-time", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"], time_windows=OFFICE)], "secrets/x",
     "read", "8.8.8.8", datetime(2026, 11, 28, 10, 0, tzinfo=UTC), None, "ip_not_allowed"),
    ("time-after-ip-ok", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"], time_windows=OFFICE)], "secrets/x",
     "read", "10.0.0.1", datetime(2026, 11, 28, 10, 0, tzinfo=UTC), None, "time_window_violation"),
    ("all-conditions-pass", [allow(["**"], ["read"], ip_ranges=["10.0.0.0/8"], time_windows=OFFICE,
                                   mfa={"max_age": "1h"})], "secrets/x", "read", "10.0.0.1", NOW,
     NOW - timedelta(minutes=59), "allow"),
    ("conditions-only-on-unmatched-rule", [allow(["secrets/a"], ["read"], ip_ranges=["10.0.0.0/8"]),
                                           allow(["secrets/b"], ["read"])], "secrets/a", "read", "8.8.8.8", NOW,
     None, "ip_not_allowed"),
]


@pytest.mark.parametrize(("rules", "resource", "capability", "ip", "now", "mfa_at", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_policy_decision(rules: list[dict[str, Any]], resource: str, capability: str, ip: str | None,
                         now: datetime, mfa_at: datetime | None, expected: str) -> None:
    compiled = parse_rules(rules) if rules else ()
    try:
        decide(compiled, resource, capability, ip=client_address(ip), now=now, mfa_at=mfa_at)
        outcome = "allow"
    except CofferError as err:
        outcome = err.code
    assert outcome == expected


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("pattern", ["", "a//b", "/a", "a/", "a**", "**b", "a/***/b", "[abc", "abc]", "[]",
                                     "[!]", "[z-a]", "a b", "ключ", "a\x00b", "x" * 601])
def test_malformed_globs_are_invalid_glob(pattern: str) -> None:
    with pytest.raises(CofferError) as err:
        compile_glob(pattern)
    assert err.value.code == "invalid_glob"


@pytest.mark.parametrize(
    "rules",
    [[], "x", [{}], [{"effect": "maybe", "paths": ["a"], "capabilities": ["read"]}],
     [{"effect": "allow", "paths": [], "capabilities": ["read"]}],
     [{"effect": "allow", "paths": ["a"], "capabilities": ["fly"]}],
     [{"effect": "allow", "paths": ["a"], "capabilities": []}],
     [{"effect": "allow", "paths": ["a"], "capabilities": ["read"], "extra": 1}],
     [allow(["a"], ["read"], ip_ranges=["10.0.0.0/33"])],
     [allow(["a"], ["read"], ip_ranges=["not-an-ip"])],
     [allow(["a"], ["read"], time_windows=[{"days": ["funday"], "start": "08:00", "end": "18:00"}])],
     [allow(["a"], ["read"], time_windows=[{"days": ["mon"], "start": "8:00", "end": "18:00"}])],
     [allow(["a"], ["read"], time_windows=[{"days": ["mon"], "start": "08:00", "end": "25:00"}])],
     [allow(["a"], ["read"], time_windows=[{"days": ["mon"], "start": "08:00", "end": "18:00",
                                             "timezone": "Mars/Olympus"}])],
     [allow(["a"], ["read"], time_windows=[{"days": ["mon"], "start": "08:00", "end": "18:00",
                                             "timezone": "../../etc/passwd"}])],
     [allow(["a"], ["read"], mfa={"max_age": "forever"})],
     [allow(["a"], ["read"], mfa={"max_age": "15m", "x": 1})],
     [allow(["a"], ["read"], weather="sunny")]],
)
def test_invalid_rules_are_invalid_policy(rules: Any) -> None:
    with pytest.raises(CofferError) as err:
        parse_rules(rules)
    assert err.value.code == "invalid_policy"


def test_glob_helpers() -> None:
    assert glob_matches("secrets/**", "secrets/a/b") and not glob_matches("secrets/*", "secrets/a/b")
    assert client_address("not an ip") is None and str(client_address("::ffff:1.2.3.4")) == "1.2.3.4"
