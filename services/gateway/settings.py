"""The gateway's settings, on top of every process's (``shared.config.Settings``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config import DURATION, Settings, check_cidrs, comma_separated
from shared.durations import parse_duration

#: areas an operator can switch off (COFFER_DISABLED_FEATURES): their calls answer feature_disabled
FEATURES = frozenset({"acme", "federation", "exports", "webhooks", "dynamic", "pki"})


def listen_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) to listen on; port 0 takes a free one."""
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535 or any(c.isspace() or c in "/@?#" for c in host):
        raise ValueError(f"{value!r} is not host:port (127.0.0.1:8200)")
    return host, int(port)


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
    #: ``host:port`` of the Vault-compatible listener (api.md §13); unset: no such listener
    vault_listen: str | None = None
    #: the mount its KV v2 answers under (``/v1/<mount>/data/...``)
    vault_kv_mount: str = Field("secret", pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    #: how long after a login ``auth/token/renew-self`` keeps giving its holder new tokens (Vault's max TTL)
    vault_token_max_ttl: int = Field(32 * 86400, ge=60, le=366 * 86400)
    #: how many secrets a Vault ``LIST`` looks through at most (beyond: the keys found, and a warning)
    vault_list_max: int = Field(10_000, ge=100, le=1_000_000)
    #: event streams (api.md §12): how long events are kept for ``Last-Event-ID``; streams one identity may
    #: hold open on one replica; seconds between heartbeat comments; bytes of events that may wait for a slow
    #: reader before its stream is cut (with a last ``event: reset``)
    event_retention: str = Field("1h", pattern=DURATION)
    event_streams: int = Field(16, ge=1, le=10_000)
    event_heartbeat: float = Field(15.0, gt=0, le=300)
    event_stream_buffer: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    _split_gateway = field_validator("disabled_features", "trusted_proxies", mode="before")(comma_separated)
    _check_proxies = field_validator("trusted_proxies")(check_cidrs)

    @field_validator("vault_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value:
            listen_address(value)
        return value or None

    @field_validator("vault_kv_mount")
    @classmethod
    def _not_a_vault_prefix(cls, value: str) -> str:
        if value in ("sys", "auth", "pki", "database", "identity", "cubbyhole"):
            raise ValueError(f"'{value}' is a path of Vault's own, not a KV mount")
        return value

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
