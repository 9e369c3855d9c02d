"""The gateway's settings, on top of every process's (``shared.config.Settings``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config import DURATION, Settings, check_cidrs, comma_separated

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
    #: event streams (api.md §12): how long events are kept for ``Last-Event-ID``; streams one identity may
    #: hold open on one replica; seconds between heartbeat comments; bytes of events that may wait for a slow
    #: reader before its stream is cut (with a last ``event: reset``)
    event_retention: str = Field("1h", pattern=DURATION)
    event_streams: int = Field(16, ge=1, le=10_000)
    event_heartbeat: float = Field(15.0, gt=0, le=300)
    event_stream_buffer: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    _split_gateway = field_validator("disabled_features", "trusted_proxies", mode="before")(comma_separated)
    _check_proxies = field_validator("trusted_proxies")(check_cidrs)

    @field_validator("disabled_features")
    @classmethod
    def _known_features(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = value - FEATURES
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {sorted(FEATURES)}")
        return value
