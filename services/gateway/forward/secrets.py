"""``/v1/secrets``: the gateway's side of the secrets API (api.md §5).

The gateway authenticates, checks scope, validates the body's types with the
shared contract, and forwards to the ``secrets`` service through its typed
client; the service applies the rules and answers. Paths are read from the raw
URL so nothing (``..``, percent-escapes) is normalised behind the caller's
back: a path the service would not accept is ``invalid_path``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import Field

from services.gateway.edge.routes import (
    AUDIT_FIELDS,
    PageQuery,
    Route,
    context,
    model_response,
    principal,
    query,
    read_model,
)
from services.gateway.state import state
from shared.contracts.secrets import (
    PREFIX_PATTERN,
    ListSecrets,
    ListVersions,
    PutSecret,
    PutSecretBody,
    RotateSecret,
    SecretRef,
    SecretsClient,
    validate_path,
)
from shared.errors import InvalidPath, InvalidRequest, ValidationError

PREFIX = "/v1/secrets/"



class SecretListQuery(PageQuery):
    prefix: str = Field("", max_length=512, json_schema_extra={"pattern": PREFIX_PATTERN})


class SecretGetQuery(PageQuery):
    #: a given version (``GET /v1/secrets/{path}``); ``limit``/``cursor`` page ``:versions``
    version: int | None = Field(None, ge=1, le=2**31 - 1)


def _target(request: web.Request, allowed_actions: tuple[str, ...]) -> tuple[str, str | None]:
    """``(path, action)`` from the raw URL: ``/v1/secrets/a/b:restore`` → ``("a/b", "restore")``."""
    raw = request.rel_url.raw_path[len(PREFIX):]
    path, sep, action = raw.rpartition(":") if ":" in raw else (raw, "", "")
    if sep and action not in allowed_actions:
        raise InvalidRequest(f"no route for {request.method} {PREFIX}…:{action[:40]}")
    return secret_path(path), action or None


def secret_path(raw: str) -> str:
    """A secret path as the URL carries it, unescaped: no percent-escape is decoded behind the caller's back
    (``%2f``, ``%2e%2e``), and the path must be one the service accepts (else ``invalid_path``). The Vault
    listener's KV paths come through here too."""
    if "%" in raw:
        raise InvalidPath("invalid secret path: escaped characters are not allowed",
                          details={"path": raw[:520]})
    return validate_path(raw)


def _secrets(request: web.Request) -> SecretsClient:
    return state(request).secrets


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _expected_version(request: web.Request, body: PutSecretBody) -> int | None:
    """``expected_version`` from the body or ``If-Match`` (both given: they must agree)."""
    if_match = request.headers.get("If-Match")
    if if_match is None:
        return body.expected_version
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 9:
        raise ValidationError.on("If-Match", 'must be a version, like "3"')
    if body.expected_version is not None and body.expected_version != int(text):
        raise ValidationError.on("If-Match", "disagrees with expected_version")
    return int(text)


async def put_secret(request: web.Request) -> web.Response:
    path, _ = _target(request, ())
    body = await read_model(request, PutSecretBody)
    expected = _expected_version(request, body)
    request[AUDIT_FIELDS] = {"value": body.value if isinstance(body.value, str) else orjson.dumps(body.value).decode()}
    result = await _secrets(request).put(context(request), PutSecret(
        **body.model_dump(exclude={"expected_version"}), path=path, expected_version=expected))
    return model_response(result.secret, status=201 if result.created else 200, headers=_etag(result.secret.version))


async def get_secret(request: web.Request) -> web.Response:
    path, action = _target(request, ("versions",))
    params = query(request, SecretGetQuery)
    if action == "versions":
        page = await _secrets(request).versions(context(request), ListVersions(
            path=path, limit=params.limit, cursor=params.cursor))
        return model_response(page)
    secret = await _secrets(request).get(context(request), SecretRef(path=path, version=params.version))
    return model_response(secret, headers=_etag(secret.version))


async def list_secrets(request: web.Request) -> web.Response:
    """A page of the secrets under ``prefix``, keeping those the caller may ``list``."""
    params = query(request, SecretListQuery)
    page = await _secrets(request).list(context(request), ListSecrets(
        prefix=params.prefix, limit=params.limit, cursor=params.cursor))
    items = await state(request).authorizer.listable(request, principal(request), page.items,
                                                     lambda item: f"secrets/{item.path}")
    return model_response(page.model_copy(update={"items": items}))


async def delete_secret(request: web.Request) -> web.Response:
    path, _ = _target(request, ())
    await _secrets(request).delete(context(request), SecretRef(path=path))
    return web.Response(status=204)


async def secret_action(request: web.Request) -> web.Response:
    path, action = _target(request, ACTIONS)
    if action is None:
        raise InvalidRequest(f"no route for POST {PREFIX}…: use :restore, :purge or :rotate")
    if action in ("restore", "rotate"):
        if action == "restore":
            meta = await _secrets(request).restore(context(request), SecretRef(path=path))
        else:
            meta = await _secrets(request).rotate(context(request), RotateSecret(path=path))
        return model_response(meta, headers=_etag(meta.version))
    await _secrets(request).purge(context(request), SecretRef(path=path))
    return web.Response(status=204)


def _policy_target(capability: str | None, actions: tuple[str, ...] = ()) -> Any:
    """(resource, capability) of a secret route: ``secrets/<path>`` and the action's capability."""
    def target(request: web.Request) -> tuple[str, str]:
        path, action = _target(request, actions)
        return f"secrets/{path}", capability or action or "read"
    return target


ONE = "/v1/secrets/{path}"
ACTIONS = ("restore", "purge", "rotate")
#: what a read under a federation mount may answer besides (api.md §5.4)
BACKEND_ERRORS = ("backend_error", "backend_timeout", "backend_rate_limited")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/secrets", list_secrets, scope="secrets:read", query=SecretListQuery,
          errors=("invalid_path", "invalid_cursor", *BACKEND_ERRORS)),
    Route("GET", r"/v1/secrets/{tail:[\s\S]+}", get_secret, scope="secrets:read", query=SecretGetQuery,
          target=_policy_target("read", ("versions",)), doc_paths=(ONE, ONE + ":versions"),
          errors=("invalid_path", "secret_not_found", "version_not_found", "secret_expired", "encryption_error",
                  "invalid_cursor", *BACKEND_ERRORS)),
    Route("PUT", r"/v1/secrets/{tail:[\s\S]+}", put_secret, scope="secrets:write", target=_policy_target("write"),
          body=PutSecretBody, statuses=(200, 201), doc_paths=(ONE,),
          errors=("invalid_path", "invalid_secret_type", "invalid_duration", "version_conflict", "secret_exists",
                  "encryption_error", "quota_exceeded")),
    Route("DELETE", r"/v1/secrets/{tail:[\s\S]+}", delete_secret, scope="secrets:write",
          target=_policy_target("delete"), statuses=(204,), doc_paths=(ONE,), errors=("invalid_path",
                                                                                        "secret_not_found")),
    Route("POST", r"/v1/secrets/{tail:[\s\S]+}", secret_action, scope="secrets:write",
          target=_policy_target(None, ACTIONS), statuses=(200, 204),
          doc_paths=(ONE + ":restore", ONE + ":purge", ONE + ":rotate"),
          errors=("invalid_path", "secret_not_found", "rotation_policy_not_found", "version_conflict",
                  "encryption_error")),
)
