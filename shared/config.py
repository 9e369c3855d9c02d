"""Process settings: pydantic-settings classes, read once, prefix ``COFFER_``.

``Settings`` holds what every Coffer process needs (storage, bus, KMS,
logging, the outbound guard); each service adds its own on top of it
(``services/<name>/settings.py``) and names that class in its ``ServiceSpec``.
No other module reads ``os.environ``. Build them in a composition root and
pass them down.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.registry import SERVICES

#: a duration string (``30d``, ``1h30m``) in a setting
DURATION = r"^([0-9]{1,12}[smhdw]){1,5}$"


def comma_separated(value: object) -> object:
    """``"a, b,c"`` → ``["a", "b", "c"]`` (other values as they are): for list-like settings from the env."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def check_cidrs(value: tuple[str, ...]) -> tuple[str, ...]:
    for cidr in value:
        ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
    return value


class Settings(BaseSettings):
    """What every Coffer process can be configured with (see README, Configuration)."""

    model_config = SettingsConfigDict(env_prefix="COFFER_", extra="ignore", frozen=True, populate_by_name=True)

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
    #: RPC coalescing on RabbitMQ: calls to one service per message at most (1 turns it off), and how
    #: long a call may wait for company under load (seconds; never when the bus is idle)
    rpc_batch_max: int = Field(64, ge=1, le=256)
    rpc_batch_window: float = Field(0.001, ge=0, le=0.05)
    log_level: str = "info"
    log_format: str = Field("json", pattern="^(json|console)$")
    public_url: str | None = None
    outbox_poll_interval: float = Field(1.0, gt=0)
    #: outbound calls to tenant-chosen addresses (webhooks, federation, ACME): address ranges
    #: and plain http an operator allows beyond public https (tests use 127.0.0.0/8). The
    #: COFFER_WEBHOOK_* names of earlier releases still work.
    outbound_allowed_cidrs: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("outbound_allowed_cidrs", "COFFER_OUTBOUND_ALLOWED_CIDRS",
                                          "COFFER_WEBHOOK_ALLOWED_CIDRS"))
    outbound_allow_http: bool = Field(
        False, validation_alias=AliasChoices("outbound_allow_http", "COFFER_OUTBOUND_ALLOW_HTTP",
                                             "COFFER_WEBHOOK_ALLOW_HTTP"))

    _split_outbound = field_validator("outbound_allowed_cidrs", mode="before")(comma_separated)
    _check_outbound = field_validator("outbound_allowed_cidrs")(check_cidrs)

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

    @property
    def key_file(self) -> Path:
        """Where the local KMS keeps its key-encryption keys."""
        return self.kms_key_file or self.data_dir / "kms.key"

    def schema_for(self, service: str) -> str:
        """The PostgreSQL schema a service owns."""
        return f"{self.schema_prefix}{service}"
