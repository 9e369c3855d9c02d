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
from yarl import URL

from shared.outbound import BROKER_PORTS
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


def split_endpoint(raw: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port``, ``host`` or a bare IPv6 literal → (host, port or None: every port)."""
    text = raw.strip()
    if not text or any(c.isspace() or c in "/@?#" for c in text):
        raise ValueError(f"platform endpoint {raw!r} is not host[:port]")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") if rest.startswith(":") else None
        if rest and port is None:
            raise ValueError(f"platform endpoint {raw!r} is not [address]:port")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, None  # a name, an IPv4 address, or a bare IPv6 literal
    if port is not None and (not port.isdigit() or not 0 < int(port) < 65536):
        raise ValueError(f"platform endpoint {raw!r} has no valid port")
    return host, int(port) if port is not None else None


def database_hosts(dsn: str) -> list[tuple[str, int | None]]:
    """Every (host, port) a libpq URL names: multi-host lists, ``?host=`` and ``?port=`` included."""
    url = URL(dsn) if "," not in (dsn.split("@")[-1].split("/")[0]) else None
    if url is None:  # postgresql://u@h1:5432,h2:5433/db: yarl can't parse a host list
        netloc = dsn.split("://", 1)[-1].split("/", 1)[0].rsplit("@", 1)[-1]
        return [(host, port or 5432) for host, port in map(split_endpoint, filter(None, netloc.split(",")))]
    hosts = url.query.get("host", url.host or "").split(",")
    ports = [int(p) for p in url.query.get("port", str(url.port or 5432)).split(",") if p.isdigit()] or [5432]
    return [(h or "localhost", ports[min(i, len(ports) - 1)]) for i, h in enumerate(hosts)]


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
    #: what keeps the root key behind the keyring (issue #29, shared/custody.py): ``file`` (the clear key file
    #: above, as before), ``shamir`` (shares held by people), ``awskms`` (a KMS key), ``pkcs11`` (an HSM key)
    seal: str = Field("file", pattern="^(file|shamir|awskms|pkcs11)$")
    #: the sealed keyring (any seal but ``file``); default ``<data_dir>/keyring.sealed``
    seal_file: Path | None = None
    #: the services' keyring files (shared/keyring.py); default ``keyrings/`` beside the root keyring.
    #: ``python -m services.admin backup`` takes it with the database (a restore tombstones the tenants deleted
    #: since); copies made otherwise go apart from the database's, with a short retention.
    keyring_dir: Path | None = None
    #: BYOK tenants (shared/byok.py): how often each process asks the KMS about their keys, and how long an
    #: answer holds when the KMS can't be reached (a key disabled stops the tenant's reads at the next check)
    byok_check_interval: float = Field(20.0, gt=0, le=60)
    byok_ttl: float = Field(60.0, gt=0, le=3600)
    awskms_key_id: str | None = None
    awskms_region: str = "us-east-1"
    awskms_endpoint_url: str | None = None
    pkcs11_library: str | None = None
    pkcs11_token: str | None = None
    pkcs11_key: str | None = None
    #: the HSM user PIN (never logged), or a file holding it
    pkcs11_pin: SecretStr | None = None
    pkcs11_pin_file: Path | None = None
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

    #: the platform's own endpoints beyond those it knows (its database, its broker with the broker's
    #: management and clustering ports, the gateway's listener): ``host:port`` or ``host`` (every port),
    #: comma-separated — a load balancer, a PgBouncer, a standby. No outbound call reaches them.
    platform_endpoints: Annotated[tuple[str, ...], NoDecode] = ()
    #: where the gateway listens (every process knows it: it is one of the platform's endpoints)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8700, ge=0, le=65535)

    _split_outbound = field_validator("outbound_allowed_cidrs", "platform_endpoints", mode="before")(comma_separated)
    _check_outbound = field_validator("outbound_allowed_cidrs")(check_cidrs)

    @field_validator("platform_endpoints")
    @classmethod
    def _endpoints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for endpoint in value:
            split_endpoint(endpoint)  # ValueError names the bad one
        return value

    def platform_targets(self, dsn: str | None = None) -> list[tuple[str, int | None]]:
        """(host, port) of the platform's own endpoints: ``dsn`` (the database this process uses; default
        ``database_url``), the broker's AMQP port and its other ports, the gateway's listener, and the
        operator's ``platform_endpoints``. A Unix socket's directory stands for this host."""
        targets: list[tuple[str, int | None]] = []
        dsn = dsn or (self.database_url.get_secret_value() if self.database_url else None)
        if dsn:
            targets += database_hosts(dsn)
        if self.amqp_url is not None:
            amqp = URL(self.amqp_url.get_secret_value())
            host = amqp.host or "localhost"
            targets += [(host, amqp.port or (5671 if amqp.scheme == "amqps" else 5672)),
                        *((host, p) for p in BROKER_PORTS)]
        if self.http_port:  # port 0 (any free one): the gateway adds the one it got when it listens
            targets.append((self.http_host, self.http_port))
        targets += [split_endpoint(e) for e in self.platform_endpoints]
        return targets

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

    @property
    def sealed_keyring_file(self) -> Path:
        """Where a seal other than ``file`` keeps the sealed keyring."""
        return self.seal_file or self.data_dir / "keyring.sealed"

    def keyrings(self, root_keyring: Path) -> Path:
        """Where the services' keyring files are, beside the root keyring unless ``COFFER_KEYRING_DIR``."""
        return self.keyring_dir or Path(root_keyring).parent / "keyrings"

    def schema_for(self, service: str) -> str:
        """The PostgreSQL schema a service owns."""
        return f"{self.schema_prefix}{service}"
