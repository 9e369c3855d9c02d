"""Rate limits (token buckets per caller and category) and per-minute tenant quotas.

Both live in the memory of one gateway replica, as Vault's rate-limit quotas
do: with N replicas behind a balancer a caller gets up to N times the
configured rate. Size the limits as ``wanted_rate / N`` (docs/operations.md, Rate limits).
"""

from __future__ import annotations

import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass

from shared.errors import QuotaExceeded, RateLimited

DEFAULT_LIMITS = "read=6000/m,write=1200/m,pki=300/m,auth=60/m"
_SPEC = re.compile(r"^(read|write|pki|auth)=([0-9]{1,9})/([smh])$")
_PERIOD = {"s": 1, "m": 60, "h": 3600}
MAX_KEYS = 100_000


def parse_limits(text: str) -> dict[str, tuple[int, int]]:
    """``"read=6000/m,auth=60/m"`` → ``{"read": (6000, 60), ...}``; unnamed categories keep defaults."""
    limits: dict[str, tuple[int, int]] = {}
    for spec in (DEFAULT_LIMITS + "," + text).split(","):
        spec = spec.strip()
        if not spec:
            continue
        match = _SPEC.fullmatch(spec)
        if not match:
            raise ValueError(f"rate limit {spec!r} is not <read|write|pki|auth>=<count>/<s|m|h>")
        limits[match[1]] = (int(match[2]), _PERIOD[match[3]])
    return limits


@dataclass(frozen=True)
class Allowance:
    """What the ``X-RateLimit-*`` headers say after one request."""

    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset)}


class RateLimiter:
    """Token buckets keyed by (category, caller), refilled continuously."""

    def __init__(self, limits: dict[str, tuple[int, int]], clock: object = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _state(self, category: str, key: str) -> tuple[int, float, float]:
        capacity, period = self.limits[category]
        rate = capacity / period
        tokens, at = self._buckets.get((category, key), (float(capacity), self._now()))
        now = self._now()
        return capacity, min(float(capacity), tokens + (now - at) * rate), rate

    def take(self, category: str, key: str) -> Allowance:
        """Spend one token, or raise ``rate_limited`` with ``Retry-After``."""
        capacity, tokens, rate = self._state(category, key)
        if tokens < 1:
            retry = max(1, math.ceil((1 - tokens) / rate))
            allowance = Allowance(capacity, 0, math.ceil((capacity - tokens) / rate))
            raise RateLimited("too many requests", details={"category": category, "retry_after": retry},
                              headers={**allowance.headers(), "Retry-After": str(retry)})
        tokens -= 1
        self._store(category, key, tokens)
        return Allowance(capacity, int(tokens), math.ceil((capacity - tokens) / rate))

    def peek(self, category: str, key: str) -> Allowance:
        capacity, tokens, rate = self._state(category, key)
        return Allowance(capacity, int(tokens), math.ceil((capacity - tokens) / rate))

    def _store(self, category: str, key: str, tokens: float) -> None:
        self._buckets[(category, key)] = (tokens, self._now())
        self._buckets.move_to_end((category, key))
        while len(self._buckets) > MAX_KEYS:  # forget the least recently seen callers
            self._buckets.popitem(last=False)


class MinuteQuota:
    """Requests per tenant per calendar minute (``requests_per_minute``)."""

    def __init__(self, clock: object = time.time) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, int]] = {}

    def take(self, tenant_id: str, per_minute: int | None) -> None:
        if per_minute is None:
            return
        now = float(self._clock())  # type: ignore[operator]
        minute = int(now // 60)
        seen_minute, count = self._counts.get(tenant_id, (minute, 0))
        if seen_minute != minute:
            count = 0
        if count >= per_minute:
            retry = max(1, math.ceil((minute + 1) * 60 - now))
            raise QuotaExceeded("the tenant's requests_per_minute quota is used up",
                                details={"quota": "requests_per_minute", "limit": per_minute},
                                headers={"Retry-After": str(retry)})
        self._counts[tenant_id] = (minute, count + 1)
        if len(self._counts) > MAX_KEYS:
            self._counts = {t: v for t, v in self._counts.items() if v[0] == minute}


def category_of(method: str, path: str) -> str:
    """The rate-limit category of a request."""
    if path.startswith(("/v1/auth/token", "/v1/sys/init", "/v1/auth/mfa")):
        return "auth"
    if path.startswith("/v1/pki"):
        return "pki"
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"
