"""RPC contracts of the ``secrets`` service (``secrets.<method>``) and its typed client.

The gateway validates HTTP bodies with the same models, so a wrong type is a
``validation_error`` before anything travels; the service re-validates and
applies the rules that need no types (path syntax, secret types, sizes).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, StrictBool, StrictStr, field_validator

from shared.context import RequestContext
from shared.contracts import DURATION_SCHEMA, Contract, Empty, JsonInt, Method, Page, PageRequest, ServiceClient
from shared.errors import InvalidPath

MAX_PATH = 512
MAX_SEGMENTS = 16
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

SECRET_TYPES = (
    "generic", "password", "api_key", "token", "certificate", "private_key", "ssh_key",
    "connection_string", "json",
)


def _bad_path(path: str, why: str) -> InvalidPath:
    return InvalidPath(f"invalid secret path: {why}", details={"path": path[:MAX_PATH + 8]})


def validate_path(path: str) -> str:
    """``path`` if it is 1–16 segments of ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``, ≤ 512 chars."""
    if not path:
        raise _bad_path(path, "empty")
    if len(path) > MAX_PATH:
        raise _bad_path(path, f"longer than {MAX_PATH} characters")
    segments = path.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise _bad_path(path, f"more than {MAX_SEGMENTS} segments")
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        raise _bad_path(path, "each segment must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}")
    return path


#: a list prefix as the description shows it: empty, or up to 16 path segments, ``/`` at the end allowed
PREFIX_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,15}/?)?$"


def validate_prefix(prefix: str) -> str:
    """A list prefix: empty, or the start of a path (it may end in ``/`` or mid-segment)."""
    if prefix:
        try:
            validate_path(prefix.removesuffix("/"))
        except InvalidPath:
            raise _bad_path(prefix, "not a path prefix") from None
    return prefix


#: how deep a secret's JSON value may nest objects and arrays: much deeper, and the gateway's parser of the bus
#: reply could not read the value back (a secret no one can read), and the audit's serialiser fails at 255
MAX_VALUE_DEPTH = 64


def within_depth(value: Any, limit: int = MAX_VALUE_DEPTH) -> bool:
    """Does ``value`` nest objects and arrays at most ``limit`` deep? (A loop, not recursion: hostile input.)"""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def not_too_deep(value: Any) -> Any:
    """A field validator: ``value``, unless nested deeper than ``MAX_VALUE_DEPTH``."""
    if not within_depth(value):
        raise ValueError(f"nested more than {MAX_VALUE_DEPTH} objects or arrays deep")
    return value


class PutSecretBody(Contract):
    """The JSON body of ``PUT /v1/secrets/{path}``."""

    #: a string, or an object for ``json`` secrets (checked with the type by the service)
    value: Any = Field(repr=False)
    # checked by the service (invalid_secret_type, invalid_duration); the description lists what it accepts
    secret_type: StrictStr = Field("generic", json_schema_extra={"enum": list(SECRET_TYPES)})
    metadata: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=64)
    expires_at: AwareDatetime | None = None
    ttl: StrictStr | None = Field(None, json_schema_extra=DURATION_SCHEMA)
    expected_version: JsonInt | None = Field(None, ge=0)

    _not_too_deep = field_validator("value")(not_too_deep)


class PutSecret(PutSecretBody):
    """``secrets.put``: write a new version (create-only with ``expected_version: 0``).

    The tenant's ``max_secrets`` quota comes in the request context; a create
    that would pass it is ``quota_exceeded`` (checked atomically with the insert).
    """

    path: StrictStr


class SecretRef(Contract):
    """``secrets.get`` / ``delete`` / ``restore`` / ``purge``."""

    path: StrictStr
    version: JsonInt | None = Field(None, ge=1)


class ListSecrets(Contract):
    """``secrets.list``: live secrets under ``prefix``, path order."""

    prefix: StrictStr = ""
    limit: JsonInt = Field(100, ge=1, le=1000)
    cursor: StrictStr | None = None


class ListVersions(Contract):
    """``secrets.versions``: one secret's versions, newest first."""

    path: StrictStr
    limit: JsonInt = Field(100, ge=1, le=1000)
    cursor: StrictStr | None = None


class VersionsChange(Contract):
    """``secrets.delete_versions`` / ``undelete_versions`` / ``destroy_versions``: some versions of one secret
    (``None``: the current one). Versions the secret doesn't have, or that are in that state already, are left
    as they are (as Vault's KV v2 does)."""

    path: StrictStr
    versions: list[Annotated[JsonInt, Field(ge=1, le=2**31 - 1)]] | None = Field(None, min_length=1, max_length=1000)


class SecretMeta(Contract):
    """A secret's metadata (never its value), as of one of its versions.

    ``version``, ``secret_type``, ``metadata`` and ``expires_at`` are that version's. On the answers about a
    secret (``put``, ``get``, ``list``, ``restore``, ``rotate``) ``created_at``/``created_by`` are the secret's:
    its first write (version 1), and ``updated_at`` its last change; on an item of ``versions`` they are that
    version's write (and ``updated_at`` the same moment). ``version_created_at``/``version_created_by`` are the
    shown version's write on every answer, so one name means one thing everywhere.
    """

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
    #: when the version shown was written, and by whom (``None`` for a path under a federation mount: the
    #: backend's own times are in ``created_at``/``updated_at``)
    version_created_at: datetime | None = None
    version_created_by: str | None = None
    #: the federation backend that answered (a path under a mount, api.md §5.4); absent otherwise
    backend: str | None = Field(None, exclude_if=lambda value: value is None)
    #: when the version shown was deleted on its own (``secrets.delete_versions``), and whether its value was
    #: destroyed (``secrets.destroy_versions``); absent while neither happened
    version_deleted_at: datetime | None = Field(None, exclude_if=lambda value: value is None)
    version_destroyed: bool = Field(False, exclude_if=lambda value: not value)


class SecretView(SecretMeta):
    """``secrets.get``'s answer: the metadata and the value."""

    value: Any = Field(repr=False)


class WriteResult(Contract):
    """``secrets.put``'s answer: the metadata and whether the secret was created."""

    created: bool
    secret: SecretMeta


class SecretPage(Contract):
    items: list[SecretMeta]
    next_cursor: str | None


# -- secret policies (api.md §5.1) ----------------------------------------------------------------

SECRET_POLICY_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class SecretPolicyBody(Contract):
    """What every write to a matching path must keep. ``path_pattern`` is a glob over the secret path."""

    path_pattern: StrictStr = Field(min_length=1, max_length=512)
    allowed_types: list[Annotated[StrictStr, Field(json_schema_extra={"enum": list(SECRET_TYPES)})]] | None = Field(
        None, min_length=1, max_length=len(SECRET_TYPES))
    require_expiry: StrictBool = False
    max_ttl: StrictStr | None = Field(None, max_length=40, json_schema_extra=DURATION_SCHEMA)
    min_length: JsonInt | None = Field(None, ge=1, le=65536)


class SecretPolicyCreate(SecretPolicyBody):
    name: StrictStr = Field(pattern=SECRET_POLICY_NAME)


class SecretPolicyRef(Contract):
    name: StrictStr = Field(max_length=200)


class SecretPolicyView(SecretPolicyCreate):
    created_at: datetime
    updated_at: datetime


# -- rotation (api.md §5.2) -----------------------------------------------------------------------


class Generator(Contract):
    """How a rotation makes a value: drawn with ``secrets.choice`` from ``charset`` (a password's default
    ``ascii-printable``, an api key's ``alphanumeric``)."""

    type: Literal["password", "api_key"]
    length: JsonInt = Field(32, ge=16, le=256)
    charset: Literal["alphanumeric", "ascii-printable", "hex"] | None = None


class RotationPolicyBody(Contract):
    """Secrets whose path matches ``path_pattern`` get a generated value every ``interval``."""

    path_pattern: StrictStr = Field(min_length=1, max_length=512)
    interval: StrictStr = Field(max_length=40, json_schema_extra=DURATION_SCHEMA)
    generator: Generator


class RotationPolicyCreate(RotationPolicyBody):
    name: StrictStr = Field(pattern=SECRET_POLICY_NAME)


class RotationPolicyView(RotationPolicyCreate):
    created_at: datetime
    updated_at: datetime


class RotateSecret(Contract):
    """``secrets.rotate``: a new version with a generated value, from the matching rotation policy."""

    path: StrictStr


SERVICE = "secrets"
PUT = Method(SERVICE, "put", PutSecret, WriteResult)
GET = Method(SERVICE, "get", SecretRef, SecretView)
VERSIONS = Method(SERVICE, "versions", ListVersions, SecretPage)
LIST = Method(SERVICE, "list", ListSecrets, SecretPage)
DELETE = Method(SERVICE, "delete", SecretRef, Empty)
RESTORE = Method(SERVICE, "restore", SecretRef, SecretMeta)
PURGE = Method(SERVICE, "purge", SecretRef, Empty)
POLICY_CREATE = Method(SERVICE, "policy_create", SecretPolicyCreate, SecretPolicyView)
POLICY_PUT = Method(SERVICE, "policy_put", SecretPolicyCreate, SecretPolicyView)
POLICY_GET = Method(SERVICE, "policy_get", SecretPolicyRef, SecretPolicyView)
POLICY_LIST = Method(SERVICE, "policy_list", PageRequest, Page[SecretPolicyView])
POLICY_DELETE = Method(SERVICE, "policy_delete", SecretPolicyRef, Empty)
ROTATE = Method(SERVICE, "rotate", RotateSecret, SecretMeta)
DELETE_VERSIONS = Method(SERVICE, "delete_versions", VersionsChange, Empty)
UNDELETE_VERSIONS = Method(SERVICE, "undelete_versions", VersionsChange, Empty)
DESTROY_VERSIONS = Method(SERVICE, "destroy_versions", VersionsChange, Empty)
ROTATION_CREATE = Method(SERVICE, "rotation_create", RotationPolicyCreate, RotationPolicyView)
ROTATION_PUT = Method(SERVICE, "rotation_put", RotationPolicyCreate, RotationPolicyView)
ROTATION_GET = Method(SERVICE, "rotation_get", SecretPolicyRef, RotationPolicyView)
ROTATION_LIST = Method(SERVICE, "rotation_list", PageRequest, Page[RotationPolicyView])
ROTATION_DELETE = Method(SERVICE, "rotation_delete", SecretPolicyRef, Empty)


class SecretsClient(ServiceClient):
    """The ``secrets`` service, over the bus."""

    async def put(self, ctx: RequestContext, request: PutSecret) -> WriteResult:
        return await self._call(PUT, ctx, request)

    async def get(self, ctx: RequestContext, request: SecretRef) -> SecretView:
        return await self._call(GET, ctx, request)

    async def versions(self, ctx: RequestContext, request: ListVersions) -> SecretPage:
        return await self._call(VERSIONS, ctx, request)

    async def list(self, ctx: RequestContext, request: ListSecrets) -> SecretPage:
        return await self._call(LIST, ctx, request)

    async def delete(self, ctx: RequestContext, request: SecretRef) -> None:
        await self._call(DELETE, ctx, request)

    async def restore(self, ctx: RequestContext, request: SecretRef) -> SecretMeta:
        return await self._call(RESTORE, ctx, request)

    async def purge(self, ctx: RequestContext, request: SecretRef) -> None:
        await self._call(PURGE, ctx, request)

    async def delete_versions(self, ctx: RequestContext, request: VersionsChange) -> None:
        await self._call(DELETE_VERSIONS, ctx, request)

    async def undelete_versions(self, ctx: RequestContext, request: VersionsChange) -> None:
        await self._call(UNDELETE_VERSIONS, ctx, request)

    async def destroy_versions(self, ctx: RequestContext, request: VersionsChange) -> None:
        await self._call(DESTROY_VERSIONS, ctx, request)

    async def policy_create(self, ctx: RequestContext, request: SecretPolicyCreate) -> SecretPolicyView:
        return await self._call(POLICY_CREATE, ctx, request)

    async def policy_put(self, ctx: RequestContext, request: SecretPolicyCreate) -> SecretPolicyView:
        return await self._call(POLICY_PUT, ctx, request)

    async def policy_get(self, ctx: RequestContext, request: SecretPolicyRef) -> SecretPolicyView:
        return await self._call(POLICY_GET, ctx, request)

    async def policy_list(self, ctx: RequestContext, request: PageRequest) -> Page[SecretPolicyView]:
        return await self._call(POLICY_LIST, ctx, request)

    async def policy_delete(self, ctx: RequestContext, request: SecretPolicyRef) -> None:
        await self._call(POLICY_DELETE, ctx, request)

    async def rotate(self, ctx: RequestContext, request: RotateSecret) -> SecretMeta:
        return await self._call(ROTATE, ctx, request)

    async def rotation_create(self, ctx: RequestContext, request: RotationPolicyCreate) -> RotationPolicyView:
        return await self._call(ROTATION_CREATE, ctx, request)

    async def rotation_put(self, ctx: RequestContext, request: RotationPolicyCreate) -> RotationPolicyView:
        return await self._call(ROTATION_PUT, ctx, request)

    async def rotation_get(self, ctx: RequestContext, request: SecretPolicyRef) -> RotationPolicyView:
        return await self._call(ROTATION_GET, ctx, request)

    async def rotation_list(self, ctx: RequestContext, request: PageRequest) -> Page[RotationPolicyView]:
        return await self._call(ROTATION_LIST, ctx, request)

    async def rotation_delete(self, ctx: RequestContext, request: SecretPolicyRef) -> None:
        await self._call(ROTATION_DELETE, ctx, request)
