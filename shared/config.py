"""Process settings: one pydantic-settings class, read once, prefix ``COFFER_``.

No other module reads ``os.environ``. Build it with ``Settings()`` in a
composition root (``app.py`` / ``__main__``) and pass it down.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.registry import SERVICES

FEATURES = frozenset({"acme", "federation", "exports", "webhooks", "dynamic", "pki"})


class Settings(BaseSettings):
    """Everything a Coffer process can be configured with (see README, Configuration)."""

    model_config = SettingsConfigDict(env_prefix="COFFER_", extra="ignore", frozen=True, populate_by_name=True)

    http_host: str = "127.0.0.1"
    http_port: int = Field(8700, ge=0, le=65535)
    #: PostgreSQL DSN; unset in embedded mode → an embedded server under ``data_dir``.
    database_url: SecretStr | None = None
    #: RabbitMQ URL; unset in embedded mode → the in-process bus.
    amqp_url: SecretStr | None = None
    data_dir: Path = Path(".coffer")
    #: the local KMS key file (created 0600 on first start); default ``<data_dir>/kms.key``.
    kms_key_file: Path | None = None
    #: prefix of the PostgreSQL schemas (tests run several platforms in one database).
    schema_prefix: str = Field("", pattern=r"^[a-z0-9_]{0,20}$")

    #: distributed mode with one RabbitMQ user per service: ``gateway=coffer-gateway,secrets=…``.
    #: A consumer accepts RPC requests and events only from the users they come from by right
    #: (checked on RabbitMQ's validated user_id). Empty: one shared user (embedded on RabbitMQ, tests).
    bus_users: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    rpc_timeout: float = Field(5.0, gt=0, le=120)
    health_timeout: float = Field(2.0, gt=0, le=60)
    token_ttl: int = Field(3600, ge=60, le=86400 * 7)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    log_level: str = "info"
    log_format: str = Field("json", pattern="^(json|console)$")
    public_url: str | None = None
    disabled_features: Annotated[frozenset[str], NoDecode] = frozenset()
    #: proxies whose X-Forwarded-For is believed (comma-separated CIDRs)
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    outbox_poll_interval: float = Field(1.0, gt=0)
    #: token buckets per caller and category: ``read=6000/m,write=1200/m,pki=300/m,auth=60/m``
    rate_limits: str = ""
    #: outbound calls to tenant-chosen addresses (webhooks, federation, ACME): address ranges
    #: and plain http an operator allows beyond public https (tests use 127.0.0.0/8). The
    #: COFFER_WEBHOOK_* names of earlier releases still work.
    outbound_allowed_cidrs: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("outbound_allowed_cidrs", "COFFER_OUTBOUND_ALLOWED_CIDRS",
                                          "COFFER_WEBHOOK_ALLOWED_CIDRS"))
    outbound_allow_http: bool = Field(
        False, validation_alias=AliasChoices("outbound_allow_http", "COFFER_OUTBOUND_ALLOW_HTTP",
                                             "COFFER_WEBHOOK_ALLOW_HTTP"))
    #: seconds before each retry, comma-separated (jittered ±20 %)
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    webhook_timeout: float = Field(10.0, gt=0, le=60)
    #: an endpoint failing this long is disabled (``webhook.disabled``)
    webhook_disable_after: str = Field("5d", pattern=r"^([0-9]{1,12}[smhdw]){1,5}$")
    #: after ``:rotate-secret`` the old secret signs beside the new one this long
    webhook_secret_overlap: str = Field("24h", pattern=r"^([0-9]{1,12}[smhdw]){1,5}$")
    webhook_poll_interval: float = Field(1.0, gt=0)
    webhook_endpoint_concurrency: int = Field(4, ge=1, le=100)
    webhook_concurrency: int = Field(64, ge=1, le=1000)
    #: how long a soft-deleted secret stays restorable (a duration string).
    secret_retention: str = Field("30d", pattern=r"^([0-9]{1,12}[smhdw]){1,5}$")
    #: seconds between runs of the lifecycle jobs (expiry events, retention purge).
    lifecycle_interval: float = Field(30.0, gt=0)

    @field_validator("disabled_features", "trusted_proxies", "outbound_allowed_cidrs", mode="before")
    @classmethod
    def _split_features(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("bus_users", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        if isinstance(value, str):
            pairs = [p.strip().partition("=") for p in value.split(",") if p.strip()]
            if any(not k or not v or sep != "=" for k, sep, v in pairs):
                raise ValueError("bus_users is service=user,service=user")
            value = {k.strip(): v.strip() for k, _, v in pairs}
        return value

    @field_validator("bus_users")
    @classmethod
    def _known_services(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = set(value) - set(SERVICES)
        if unknown:
            raise ValueError(f"bus_users names unknown services {sorted(unknown)}")
        if value and set(value) != set(SERVICES):
            raise ValueError(f"bus_users must name every service: {list(SERVICES)}")
        return value

    @field_validator("trusted_proxies", "outbound_allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return value

    @field_validator("disabled_features")
    @classmethod
    def _known_features(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = value - FEATURES
        if unknown:
            raise ValueError(f"unknown features {sorted(unknown)}; known: {sorted(FEATURES)}")
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        steps = [float(v) for v in value.split(",")]  # ValueError names the bad one
        if not steps or any(s < 0 or s > 7 * 86400 for s in steps):
            raise ValueError("retry steps are 0 to 604800 seconds")
        return value

    @property
    def key_file(self) -> Path:
        """Where the local KMS keeps its key-encryption keys."""
        return self.kms_key_file or self.data_dir / "kms.key"

    def schema_for(self, service: str) -> str:
        """The PostgreSQL schema a service owns."""
        return f"{self.schema_prefix}{service}"
