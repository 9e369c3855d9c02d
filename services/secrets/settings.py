"""The secrets service's settings, on top of every process's (``shared.config.Settings``)."""

from __future__ import annotations

from pydantic import Field

from shared.config import DURATION, Settings


class SecretsSettings(Settings):
    #: how long a soft-deleted secret stays restorable (a duration string).
    secret_retention: str = Field("30d", pattern=DURATION)
    #: seconds between runs of the lifecycle jobs (expiry events, retention purge).
    lifecycle_interval: float = Field(30.0, gt=0)
