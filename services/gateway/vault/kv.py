"""KV v2 on the Vault listener (api.md §13): Vault's ``<mount>/data|metadata|delete|undelete|destroy`` paths,
answered by the secrets service through its typed client, as the main API's ``/v1/secrets`` routes are.

The path below the mount is a Coffer secret path, read from the raw URL exactly as the main API reads its own
(``forward/secrets.secret_path``: no escape decoded, ``..`` and empty segments refused). Each route names the
policy resource ``secrets/<path>`` and the capability Coffer's own route of that meaning needs: ``read`` (data,
metadata), ``write`` (write; a patch needs ``read`` too), ``delete`` (soft-delete versions), ``restore``
(undelete), ``purge`` (destroy versions, delete the metadata), and ``list`` per key a ``LIST`` shows.
``options.cas`` is Coffer's ``expected_version`` (``0``: create only). A write without ``cas`` still can't lose
a concurrent change of the secret's type or custom metadata: it reads them, then writes expecting that version,
and tries again (three times) if another write came first. ``PATCH`` (RFC 7396 merge of the KV map) likewise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.gateway.edge.routes import AUDIT_FIELDS, Route, context, principal, query, read_object
from services.gateway.forward.secrets import secret_path
from services.gateway.iam.routes import authorize
from services.gateway.state import state
from services.gateway.vault.answers import EXTRA, answer
from services.gateway.vault.kv_shapes import (
    folder_keys,
    from_kv,
    gone_version,
    key_metadata,
    kv_map,
    merge_patch,
    version_metadata,
)
from shared.contracts import JsonInt, Query, parse
from shared.contracts.secrets import (
    ListSecrets,
    ListVersions,
    PutSecret,
    SecretMeta,
    SecretRef,
    VersionsChange,
    WriteResult,
    not_too_deep,
)
from shared.errors import InsufficientScope, InvalidPath, SecretNotFound, VersionConflict, VersionNotFound

WRITE_ATTEMPTS = 3
LIST_PAGE = 1000


class Options(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    cas: JsonInt | None = Field(None, ge=0, le=2**31 - 1)


class KvWrite(BaseModel):
    """``data/<path>``'s body: ``{data, options?}`` (other fields ignored, as Vault ignores them)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    data: dict[str, Any] = Field(repr=False)
    options: Options = Options()

    _not_too_deep = field_validator("data")(not_too_deep)


class KvVersions(BaseModel):
    """``delete|undelete|destroy/<path>``'s body (versions within the bus contract's range: a version out of it is
    422 here, not a contract error on the way to the service)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    versions: list[Annotated[JsonInt, Field(ge=1, le=2**31 - 1)]] = Field(min_length=1, max_length=1000)


class ReadQuery(Query):
    version: int = Field(0, ge=0, le=2**31 - 1)


class MetadataQuery(Query):
    list: bool = False


def kv_path(request: web.Request, kind: str, *, folder: bool = False) -> str:
    """The secret path of ``/v1/<mount>/<kind>/<path>`` from the raw URL (``folder``: a ``LIST``'s prefix,
    ``""`` or ending in ``/``)."""
    prefix = f"/v1/{state(request).settings.vault_kv_mount}/{kind}"
    raw = request.rel_url.raw_path
    if not raw.startswith(prefix):  # the mount or kind itself escaped: nothing is decoded for the caller
        raise InvalidPath("invalid secret path: escaped characters are not allowed", details={"path": raw[:520]})
    rest = raw[len(prefix):].removeprefix("/")
    if folder:
        folder_path = rest.removesuffix("/")
        return secret_path(folder_path) + "/" if folder_path else ""
    return secret_path(rest)


def _target(kind: str, capability: str) -> Any:
    return lambda request: (f"secrets/{kv_path(request, kind)}", capability)


async def _current(request: web.Request, path: str) -> SecretMeta | None:
    """The secret's newest version's metadata (no value), or ``None`` when there is no live secret."""
    try:
        page = await state(request).secrets.versions(context(request), ListVersions(path=path, limit=1))
    except SecretNotFound:
        return None
    return page.items[0] if page.items else None


async def _put(request: web.Request, path: str, data: dict[str, Any], cas: int | None, *,
               current: SecretMeta | None) -> WriteResult:
    """A new version holding the KV map ``data``, over ``current`` (its type and custom metadata kept), expecting
    ``cas`` (else ``current``'s version: none at all for a new secret)."""
    secret_type, value = from_kv(data, current.secret_type if current is not None else None)
    request[AUDIT_FIELDS] = {"value": value if isinstance(value, str) else orjson.dumps(value).decode()}
    expected = cas if cas is not None else (current.version if current is not None else 0)
    return await state(request).secrets.put(context(request), parse(PutSecret, {  # a merge's breach is a 422 too
        "path": path, "value": value, "secret_type": secret_type,
        "metadata": dict(current.metadata) if current is not None else {}, "expected_version": expected}))


async def _write(request: web.Request, path: str, cas: int | None,
                 compose: Callable[[], Awaitable[tuple[dict[str, Any], SecretMeta | None]]]) -> web.Response:
    """``compose()`` (the KV map to write, and the version it is written over), written; composed again and
    retried when another write came first and the caller gave no ``cas``. The answer: the new version's
    metadata, its ``custom_metadata`` (carried on from the version before) only to a caller who may read the
    secret — a write-only caller sees no more than it sent."""
    for attempt in range(WRITE_ATTEMPTS):
        data, current = await compose()
        try:
            result = await _put(request, path, data, cas, current=current)
            break
        except VersionConflict:
            if cas is not None or attempt == WRITE_ATTEMPTS - 1:
                raise
    shown = version_metadata(result.secret)
    who = principal(request)
    if "secrets:read" not in who.scopes or not await state(request).authorizer.may(
            request, who, f"secrets/{path}", "read"):
        shown["custom_metadata"] = None
    return answer(request, data=shown)


async def write(request: web.Request) -> web.Response:
    path = kv_path(request, "data")
    body = parse(KvWrite, await read_object(request))

    async def compose() -> tuple[dict[str, Any], SecretMeta | None]:
        return body.data, await _current(request, path)
    return await _write(request, path, body.options.cas, compose)


async def patch(request: web.Request) -> web.Response:
    """RFC 7396 merge of ``data`` into the current version's KV map, written as a new version.

    The merge reads the value, so the caller needs ``read`` as well as ``write`` (the ``secrets:read`` scope
    too): a write-only caller may replace a value, never make one out of what it can't see — patching
    ``{"host": "mine"}`` into ``{"host": …, "password": …}`` would send the password it can't read to its host.
    """
    path = kv_path(request, "data")
    who = principal(request)
    if "secrets:read" not in who.scopes:
        raise InsufficientScope("a patch reads the secret too: it needs the 'secrets:read' scope",
                                details={"required_scope": "secrets:read"})
    await state(request).authorizer.authorize_also(request, who, f"secrets/{path}", "read")
    body = parse(KvWrite, await read_object(request))

    async def compose() -> tuple[dict[str, Any], SecretMeta | None]:
        secret = await state(request).secrets.get(context(request), SecretRef(path=path))
        return merge_patch(kv_map(secret.secret_type, secret.value), body.data), secret
    return await _write(request, path, body.options.cas, compose)


async def read(request: web.Request) -> web.Response:
    """A version's KV map and metadata; a deleted or destroyed one is 404 with its metadata beside the error,
    as Vault answers (clients read ``data.metadata.deletion_time`` there)."""
    path, asked = kv_path(request, "data"), query(request, ReadQuery)
    try:
        secret = await state(request).secrets.get(context(request), SecretRef(path=path, version=asked.version or None))
    except VersionNotFound as exc:
        if exc.details.get("deleted") or exc.details.get("destroyed"):
            request[EXTRA] = {"data": {"data": None, "metadata": gone_version(exc.details)}}
        raise
    return answer(request, data={"data": kv_map(secret.secret_type, secret.value),
                                 "metadata": version_metadata(secret)})


async def delete_latest(request: web.Request) -> web.Response:
    await state(request).secrets.delete_versions(context(request), VersionsChange(path=kv_path(request, "data")))
    return web.Response(status=204)


def _change(kind: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        path = kv_path(request, kind)
        body = parse(KvVersions, await read_object(request))
        change = VersionsChange(path=path, versions=body.versions)
        secrets = state(request).secrets
        await {"delete": secrets.delete_versions, "undelete": secrets.undelete_versions,
               "destroy": secrets.destroy_versions}[kind](context(request), change)
        return web.Response(status=204)
    handler.__name__ = f"{kind}_versions"
    return handler


async def metadata(request: web.Request) -> web.Response:
    """The key's metadata and versions (``read``), or with ``?list=true`` a ``LIST``."""
    if query(request, MetadataQuery).list:
        return await list_keys(request)
    path = kv_path(request, "metadata")
    await authorize(request, f"secrets/{path}", "read")
    page = await state(request).secrets.versions(context(request), ListVersions(path=path, limit=1000))
    return answer(request, data=key_metadata(page.items, complete=page.next_cursor is None))


async def list_keys(request: web.Request) -> web.Response:
    """The keys one level below a folder: from the secrets under it the caller may ``list`` (a folder shows
    only when one of those is in it), up to ``COFFER_VAULT_LIST_MAX`` secrets looked at (then a warning)."""
    prefix = kv_path(request, "metadata", folder=True)
    st, ctx, who = state(request), context(request), principal(request)
    paths: list[str] = []
    cursor, seen, warnings = None, 0, []
    while True:
        page = await st.secrets.list(ctx, ListSecrets(prefix=prefix, limit=LIST_PAGE, cursor=cursor))
        seen += len(page.items)
        visible = await st.authorizer.listable(request, who, page.items, lambda item: f"secrets/{item.path}")
        paths.extend(item.path for item in visible)
        cursor = page.next_cursor
        if cursor is None:
            break
        if seen >= st.settings.vault_list_max:
            # no count: the secrets looked at include those the caller may not list
            warnings.append("only the first COFFER_VAULT_LIST_MAX secrets under this folder were looked at: "
                            "the list may be incomplete")
            break
    keys = folder_keys(prefix, paths)
    if not keys:
        raise SecretNotFound("nothing to list under this path", details={"path": prefix})
    return answer(request, data={"keys": keys}, warnings=warnings)


async def delete_metadata(request: web.Request) -> web.Response:
    """Every version and the key itself, gone for good (Coffer's purge)."""
    await state(request).secrets.purge(context(request), SecretRef(path=kv_path(request, "metadata")))
    return web.Response(status=204)


DELETE_VERSIONS, UNDELETE_VERSIONS, DESTROY_VERSIONS = _change("delete"), _change("undelete"), _change("destroy")
PATH = r"{path:[\s\S]+}"
FOLDER = r"{path:[\s\S]*}"
#: what a write may answer beyond the common errors (the service's own rules)
WRITE_ERRORS = ("invalid_path", "invalid_secret_type", "version_conflict", "secret_exists", "secret_not_found",
                "version_not_found", "encryption_error", "quota_exceeded")


def routes(mount: str) -> tuple[Route, ...]:
    """The KV v2 routes under ``/v1/<mount>/``."""
    base = f"/v1/{mount}"
    read_errors = ("invalid_path", "secret_not_found", "version_not_found", "secret_expired", "encryption_error")
    change_errors = ("invalid_path", "secret_not_found")
    return (
        Route("GET", f"{base}/data/{PATH}", read, scope="secrets:read", target=_target("data", "read"),
              query=ReadQuery, errors=read_errors),
        *(Route(method, f"{base}/data/{PATH}", write, scope="secrets:write", target=_target("data", "write"),
                body=KvWrite, errors=WRITE_ERRORS) for method in ("POST", "PUT")),
        Route("PATCH", f"{base}/data/{PATH}", patch, scope="secrets:write", target=_target("data", "write"),
              body=KvWrite, errors=WRITE_ERRORS),
        Route("DELETE", f"{base}/data/{PATH}", delete_latest, scope="secrets:write",
              target=_target("data", "delete"), statuses=(204,), errors=change_errors),
        *(Route(method, f"{base}/{kind}/{PATH}", handler, scope="secrets:write", target=_target(kind, capability),
                body=KvVersions, statuses=(204,), errors=change_errors)
          for kind, capability, handler in (("delete", "delete", DELETE_VERSIONS),
                                            ("undelete", "restore", UNDELETE_VERSIONS),
                                            ("destroy", "purge", DESTROY_VERSIONS))
          for method in ("POST", "PUT")),
        Route("GET", f"{base}/metadata/{FOLDER}", metadata, scope="secrets:read", query=MetadataQuery,
              errors=read_errors),
        Route("GET", f"{base}/metadata", metadata, scope="secrets:read", query=MetadataQuery, errors=read_errors),
        Route("LIST", f"{base}/metadata/{FOLDER}", list_keys, scope="secrets:read", category="read",
              errors=("invalid_path", "secret_not_found")),
        Route("LIST", f"{base}/metadata", list_keys, scope="secrets:read", category="read",
              errors=("invalid_path", "secret_not_found")),
        Route("DELETE", f"{base}/metadata/{PATH}", delete_metadata, scope="secrets:write",
              target=_target("metadata", "purge"), statuses=(204,), errors=change_errors),
    )
