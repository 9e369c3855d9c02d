"""The secrets service's settings, on top of every process's (``shared.config.Settings``)."""

from __future__ import annotations

from pydantic import Field

from shared.config import DURATION, Settings


class SecretsSettings(Settings):
    #: how long a soft-deleted secret stays restorable (a duration string).
    secret_retention: str = Field("30d", pattern=DURATION)
    #: seconds between runs of the lifecycle jobs (expiry events, retention purge).
    lifecycle_interval: float = Field(30.0, gt=0)
    #: the shortest rotation ``interval`` a rotation policy may have (a duration string).
    rotation_min_interval: str = Field("1m", pattern=DURATION)
    #: seconds before the first retry of a failed scheduled rotation (doubling, capped at 1 h or the interval).
    rotation_retry_base: float = Field(60.0, gt=0)
    #: how long an export (and its bundle) is kept after it was asked for (a duration string).
    export_ttl: str = Field("24h", pattern=DURATION)
    #: seconds between looks for pending exports (a new export wakes the runner at once).
    export_poll_interval: float = Field(1.0, gt=0)
    #: exports built at once by one process.
    export_concurrency: int = Field(2, ge=1, le=32)
    #: failures in a row after which a federation backend is not asked for a while (its circuit opens).
    federation_breaker_failures: int = Field(5, ge=1, le=1000)
    #: seconds an open circuit answers backend_error at once before one call is let through again.
    federation_breaker_cooldown: float = Field(30.0, gt=0)
