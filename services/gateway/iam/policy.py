"""Policies, without I/O: rule validation, path globs, conditions, the decision.

A rule: ``{effect, paths, capabilities, conditions?}``. Evaluation for
``(resource path, capability, client ip, now, mfa_at)``:

1. rules whose paths and capabilities match;
2. a matching ``deny`` whose conditions hold → ``access_denied`` (deny wins;
   conditions on a deny narrow *when* it denies);
3. no matching ``allow`` → ``access_denied``;
4. a matching ``allow`` whose conditions all hold → allowed;
5. otherwise the error names the first failed condition of the first
   matching allow rule: ``ip_not_allowed``, ``time_window_violation`` or
   ``mfa_required``.

Globs are ``shared.globs`` (``*``, ``**``, ``?``, ``[abc]``).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.durations import parse_duration
from shared.errors import (
    AccessDenied,
    CofferError,
    InvalidDuration,
    InvalidPolicy,
    IpNotAllowed,
    MfaRequired,
    TimeWindowViolation,
)
from shared.globs import compile_glob, glob_matches

CAPABILITIES = ("read", "list", "write", "delete", "restore", "purge", "rotate", "issue", "sign",
                "approve", "revoke", "manage")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_RULES = 100
MAX_PATHS = 100
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- rules -------------------------------------------------------------------


@dataclass(frozen=True)
class TimeWindow:
    days: frozenset[int]
    start: time
    end: time  # time(0) with ``until_midnight`` for "24:00"
    until_midnight: bool
    zone: ZoneInfo

    def contains(self, now: datetime) -> bool:
        """Is ``now`` (any zone) inside the window, read on the window's wall clock?"""
        local = now.astimezone(self.zone)
        day, t = local.weekday(), local.time()
        if self.until_midnight:
            return day in self.days and t >= self.start
        if self.start < self.end:
            return day in self.days and self.start <= t < self.end
        # crosses midnight: from ``start`` on a listed day until ``end`` the next morning
        return (day in self.days and t >= self.start) or ((day - 1) % 7 in self.days and t < self.end)


@dataclass(frozen=True)
class Rule:
    effect: str
    paths: tuple[str, ...]
    capabilities: frozenset[str]
    ip_ranges: tuple[IpNetwork, ...] = ()
    time_windows: tuple[TimeWindow, ...] = ()
    mfa_max_age: int | None = None

    def matches(self, resource: str, capability: str) -> bool:
        return capability in self.capabilities and any(glob_matches(p, resource) for p in self.paths)

    def failed_condition(self, ip: IpAddress | None, now: datetime, mfa_at: datetime | None) -> CofferError | None:
        """The first condition this request fails, or ``None``."""
        if self.ip_ranges and (ip is None or not any(ip in net for net in self.ip_ranges if net.version == ip.version)):
            return IpNotAllowed("client address is outside the allowed ranges")
        if self.time_windows and not any(w.contains(now) for w in self.time_windows):
            return TimeWindowViolation("outside the allowed time windows")
        if self.mfa_max_age is not None and (
            mfa_at is None or now - mfa_at > timedelta(seconds=self.mfa_max_age)
        ):
            return MfaRequired("a fresh MFA step-up is required", details={"max_age_seconds": self.mfa_max_age})
        return None


def _bad(message: str, index: int) -> InvalidPolicy:
    return InvalidPolicy(message, details={"rule": index})


def _time_window(raw: Any, index: int) -> TimeWindow:
    if not isinstance(raw, dict) or set(raw) - {"days", "start", "end", "timezone"}:
        raise _bad("a time window is {days, start, end, timezone}", index)
    days = raw.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
        raise _bad(f"time window days must be a non-empty list of {', '.join(DAYS)}", index)
    start, end = raw.get("start"), raw.get("end")
    if not (isinstance(start, str) and _TIME.match(start) and start != "24:00"
            and isinstance(end, str) and _TIME.match(end)):
        raise _bad("time window start/end must be HH:MM (end may be 24:00)", index)
    zone_name = raw.get("timezone", "UTC")
    try:
        if not isinstance(zone_name, str) or ".." in zone_name or zone_name.startswith("/"):
            raise ZoneInfoNotFoundError(zone_name)
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad("unknown IANA timezone in time window", index) from None
    if start == end:
        raise _bad("time window start and end are equal", index)
    return TimeWindow(
        days=frozenset(DAYS.index(d) for d in days),
        start=time.fromisoformat(start),
        end=time(0) if end == "24:00" else time.fromisoformat(end),
        until_midnight=end == "24:00",
        zone=zone,
    )


def parse_rule(raw: Any, index: int) -> Rule:
    """One rule, validated (``invalid_policy`` / ``invalid_glob``)."""
    if not isinstance(raw, dict) or set(raw) - {"effect", "paths", "capabilities", "conditions"}:
        raise _bad("a rule is {effect, paths, capabilities, conditions?}", index)
    effect = raw.get("effect")
    if effect not in ("allow", "deny"):
        raise _bad("effect must be 'allow' or 'deny'", index)
    paths = raw.get("paths")
    if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS:
        raise _bad(f"paths must be a list of 1–{MAX_PATHS} globs", index)
    for p in paths:
        compile_glob(p)
    caps = raw.get("capabilities")
    if not isinstance(caps, list) or not caps or any(c not in CAPABILITIES for c in caps):
        raise _bad(f"capabilities must be a non-empty list of {', '.join(CAPABILITIES)}", index)
    cond = raw.get("conditions") or {}
    if not isinstance(cond, dict) or set(cond) - {"ip_ranges", "time_windows", "mfa"}:
        raise _bad("conditions are {ip_ranges?, time_windows?, mfa?}", index)
    ranges: list[IpNetwork] = []
    for cidr in cond.get("ip_ranges") or []:
        try:
            ranges.append(ipaddress.ip_network(cidr, strict=False))
        except (TypeError, ValueError):
            raise _bad("ip_ranges must be IPv4 or IPv6 CIDRs", index) from None
    windows = tuple(_time_window(w, index) for w in cond.get("time_windows") or [])
    mfa = cond.get("mfa")
    max_age = None
    if mfa is not None:
        if not isinstance(mfa, dict) or set(mfa) != {"max_age"}:
            raise _bad("mfa is {max_age: duration}", index)
        try:
            max_age = parse_duration(mfa["max_age"], field="mfa.max_age")
        except InvalidDuration:
            raise _bad("mfa.max_age must be a duration like 15m", index) from None
    return Rule(effect, tuple(paths), frozenset(caps), tuple(ranges), windows, max_age)


def parse_rules(raw: Any) -> tuple[Rule, ...]:
    """A policy's rules, validated; empty rules are ``invalid_policy``."""
    if not isinstance(raw, list) or not raw or len(raw) > MAX_RULES:
        raise InvalidPolicy(f"rules must be a list of 1–{MAX_RULES} rules")
    return tuple(parse_rule(r, i) for i, r in enumerate(raw))


# -- the decision -----------------------------------------------------------


def client_address(value: str | None) -> IpAddress | None:
    """An address to test ranges with (IPv4-mapped IPv6 counts as IPv4)."""
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def decide(
    rules: tuple[Rule, ...] | list[Rule],
    resource: str,
    capability: str,
    *,
    ip: IpAddress | None,
    now: datetime | None = None,
    mfa_at: datetime | None = None,
) -> None:
    """Return if allowed; raise the vocabulary's reason otherwise."""
    now = now or datetime.now(UTC)
    matching = [r for r in rules if r.matches(resource, capability)]
    for rule in matching:
        if rule.effect == "deny" and rule.failed_condition(ip, now, mfa_at) is None:
            raise AccessDenied("denied by policy", details={"resource": resource, "capability": capability})
    allows = [r for r in matching if r.effect == "allow"]
    if not allows:
        raise AccessDenied("no policy allows this", details={"resource": resource, "capability": capability})
    failures = [r.failed_condition(ip, now, mfa_at) for r in allows]
    if any(f is None for f in failures):
        return
    first = failures[0]
    assert first is not None
    first.details.update({"resource": resource, "capability": capability})
    raise first

