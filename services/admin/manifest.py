"""A backup's manifest: what it holds, checked as data before a restore trusts any of it.

age says the file was not changed since it was made, not who made it (anyone with a recipient's public
key can make one), so a restore reads every field through this model: bounded, typed, and names that
must look like what Coffer makes (a table is ``<service>.<name>``, a file name has no path in it).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.registry import SERVICES

_SERVICE = "(" + "|".join(SERVICES) + ")"
Name = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]{0,62}$")]
TableKey = Annotated[str, StringConstraints(pattern=rf"^{_SERVICE}\.[a-z_][a-z0-9_]{{0,62}}$")]
TenantId = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Version = Annotated[str, StringConstraints(pattern=r"^(shared|service)/[A-Za-z0-9_.-]{1,100}\.sql$")]
FileName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TableCount(_Frozen):
    rows: int = Field(ge=0)
    tenants: dict[TenantId, int] | None = None


class AuditHead(_Frozen):
    seq: int = Field(ge=1)
    hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    entries: int = Field(ge=1)


class FileRef(_Frozen):
    name: FileName
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Manifest(_Frozen):
    format: Literal[1]
    created_at: str = Field(max_length=64)
    snapshot_at: str = Field(max_length=64)
    schema_prefix: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{0,20}$")]
    seal: Literal["file", "shamir", "awskms", "pkcs11"]
    root_tenant: TenantId
    tenants: list[TenantId]
    migrations: dict[Literal["gateway", "secrets", "pki", "lease", "webhooks"], list[Version]]
    tables: dict[TableKey, TableCount]
    audit_heads: dict[TenantId, AuditHead]
    #: ``root`` (the root keyring) and one per service that has a keyring
    files: dict[Literal["root", "gateway", "secrets", "pki", "lease", "webhooks"], FileRef]

    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())
