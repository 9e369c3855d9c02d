"""The webhook dispatcher's settings, on top of every process's (``shared.config.Settings``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.config import DURATION, Settings


class WebhooksSettings(Settings):
    #: seconds before each retry, comma-separated (jittered ±20 %)
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_timeout: float = Field(10.0, gt=0, le=60)
    #: an endpoint failing this long is disabled (``webhook.disabled``)
    webhook_disable_after: str = Field("5d", pattern=DURATION)
    #: after ``:rotate-secret`` the old secret signs beside the new one this long
    webhook_secret_overlap: str = Field("24h", pattern=DURATION)
    webhook_poll_interval: float = Field(1.0, gt=0)
    webhook_endpoint_concurrency: int = Field(4, ge=1, le=100)
    webhook_concurrency: int = Field(64, ge=1, le=1000)

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        steps = [float(v) for v in value.split(",")]  # ValueError names the bad one
        if not steps or any(s < 0 or s > 7 * 86400 for s in steps):
            raise ValueError("retry steps are 0 to 604800 seconds")
        return value

    @property
    def retry_schedule(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.webhook_retry_schedule.split(","))
