"""What the API answers, as frozen dataclasses (``from_dict`` ignores fields a newer server adds)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None


def _build(cls: type[T], data: dict[str, Any], times: tuple[str, ...] = ()) -> T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: (_time(v) if k in times else v) for k, v in data.items() if k in names}
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class Token:
    access_token: str = dataclasses.field(repr=False)
    token_type: str
    expires_in: int
    scope: str
    tenant_id: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Token:
        return _build(cls, data)


@dataclasses.dataclass(frozen=True)
class SecretMeta:
    path: str
    version: int
    secret_type: str
    metadata: dict[str, str]
    expires_at: datetime | None = None
    created_at: datetime | None = None
    created_by: str | None = None
    updated_at: datetime | None = None
    deleted_at: datetime | None = None
    purge_after: datetime | None = None

    _TIMES = ("expires_at", "created_at", "updated_at", "deleted_at", "purge_after")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SecretMeta:
        return _build(cls, data, cls._TIMES)


@dataclasses.dataclass(frozen=True)
class Secret(SecretMeta):
    """A version with its value (a ``json`` secret's value is a dict)."""

    value: Any = dataclasses.field(default=None, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Secret:
        return _build(cls, data, cls._TIMES)


@dataclasses.dataclass(frozen=True)
class Issued:
    serial: str
    certificate: str
    chain: list[str]
    ca_id: str
    expires_at: datetime | None
    private_key: str = dataclasses.field(repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Issued:
        return _build(cls, data, ("expires_at",))


@dataclasses.dataclass(frozen=True)
class LeaseCredentials:
    lease_id: str
    lease_duration: int
    renewable: bool
    expires_at: datetime | None
    data: dict[str, str] = dataclasses.field(repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseCredentials:
        return _build(cls, data, ("expires_at",))


@dataclasses.dataclass(frozen=True)
class Lease:
    id: str
    engine: str
    role: str
    status: str
    issued_at: datetime | None
    expires_at: datetime | None
    max_expires_at: datetime | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lease:
        return _build(cls, data, ("issued_at", "expires_at", "max_expires_at"))


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    type: str
    config: dict[str, Any]
    created_at: datetime | None = None
    updated_at: datetime | None = None
    admin_rotated_at: datetime | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Engine:
        return _build(cls, data, ("created_at", "updated_at", "admin_rotated_at"))


def as_dict(item: Any) -> Any:
    """A result as JSON-ready data (datetimes as ISO 8601): what ``-o json`` prints."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {f.name: as_dict(getattr(item, f.name)) for f in dataclasses.fields(item)}
    if isinstance(item, datetime):
        return item.isoformat().replace("+00:00", "Z")
    if isinstance(item, dict):
        return {k: as_dict(v) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return [as_dict(v) for v in item]
    return item
