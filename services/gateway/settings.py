"""The gateway's settings, on top of every process's (``shared.config.Settings``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config import DURATION, Settings, check_cidrs, comma_separated
from shared.durations import parse_duration

#: areas an operator can switch off (COFFER_DISABLED_FEATURES): their calls answer feature_disabled
FEATURES = frozenset({"acme", "federation", "exports", "webhooks", "dynamic", "pki"})


class GatewaySettings(Settings):
    health_timeout: float = Field(2.0, gt=0, le=60)
    token_ttl: int = Field(3600, ge=60, le=86400 * 7)
    #: an auth method's issuer keys are fetched again on an unknown ``kid`` at most once per this many seconds
    auth_keys_refetch_interval: float = Field(60.0, ge=1, le=3600)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    disabled_features: Annotated[frozenset[str], NoDecode] = frozenset()
    #: proxies whose X-Forwarded-For is believed (comma-separated CIDRs)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    #: token buckets per caller and category: ``read=6000/m,write=1200/m,pki=300/m,auth=60/m``
    rate_limits: str = ""
    #: how long an access request waits for its decision before it expires (api.md §14)
    access_request_ttl: str = Field("24h", pattern=DURATION)
    #: seconds between runs of the gateway's jobs (access requests that expire, grants that ended)
    lifecycle_interval: float = Field(30.0, gt=0)

    _split_gateway = field_validator("disabled_features", "trusted_proxies", mode="before")(comma_separated)
    _check_proxies = field_validator("trusted_proxies")(check_cidrs)

    @property
    def access_request_ttl_seconds(self) -> int:
        return parse_duration(self.access_request_ttl, field="COFFER_ACCESS_REQUEST_TTL")

    @field_validator("disabled_features")
    @classmethod
    def _known_features(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = value - FEATURES
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {sorted(FEATURES)}")
        return value
