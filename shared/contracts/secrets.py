"""RPC contracts of the ``secrets`` service (``secrets.<method>``).

The gateway validates HTTP bodies with the same models, so a wrong type is a
``validation_error`` before anything travels; the service re-validates and
applies the rules that need no types (path syntax, secret types, sizes).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, StrictStr

SECRET_TYPES = (
    "generic", "password", "api_key", "token", "certificate", "private_key", "ssh_key",
    "connection_string", "json",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PutSecretBody(_Model):
    """The JSON body of ``PUT /v1/secrets/{path}``."""

    #: a string, or an object for ``json`` secrets (checked with the type by the service)
    value: Any = Field(repr=False)
    secret_type: StrictStr = "generic"
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=64)
    expires_at: AwareDatetime | None = None
    ttl: StrictStr | None = None
    expected_version: StrictInt | None = Field(None, ge=0)


class PutSecret(PutSecretBody):
    """``secrets.put``: write a new version (create-only with ``expected_version: 0``)."""

    path: StrictStr


class SecretRef(_Model):
    """``secrets.get`` / ``delete`` / ``restore`` / ``purge``."""

    path: StrictStr
    version: StrictInt | None = Field(None, ge=1)


class ListSecrets(_Model):
    """``secrets.list``: live secrets under ``prefix``, path order."""

    prefix: StrictStr = ""
    limit: StrictInt = Field(100, ge=1, le=1000)
    cursor: StrictStr | None = None


class ListVersions(_Model):
    """``secrets.versions``: one secret's versions, newest first."""

    path: StrictStr
    limit: StrictInt = Field(100, ge=1, le=1000)
    cursor: StrictStr | None = None


class SecretMeta(_Model):
    """A secret's metadata (never its value)."""

    path: str
    version: int
    secret_type: str
    metadata: dict[str, str]
    expires_at: datetime | None
    created_at: datetime
    created_by: str | None
    updated_at: datetime
    deleted_at: datetime | None
    purge_after: datetime | None


class WriteResult(_Model):
    """``secrets.put``'s answer: the metadata and whether the secret was created."""

    created: bool
    secret: SecretMeta


class SecretPage(_Model):
    items: list[SecretMeta]
    next_cursor: str | None


class KekRotation(_Model):
    """``secrets.rotate_kek``'s answer."""

    kek_id: str
    rewrapped: int
