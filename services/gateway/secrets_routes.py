"""``/v1/secrets``: the gateway's side of the secrets API (api.md §5).

The gateway authenticates, checks scope, validates the body's types with the
shared contract, and forwards to the ``secrets`` service over the bus; the
service applies the rules and answers. Paths are read from the raw URL so
nothing (``..``, percent-escapes) is normalised behind the caller's back: a
path the service would not accept is ``invalid_path``.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from services.gateway.api_models import SecretGetQuery, SecretListQuery
from services.gateway.handlers import BUS
from services.gateway.http import AUDIT_FIELDS, GUARD, Route, context, json_response, principal, read_model
from shared.contracts.secrets import PutSecretBody, validate_path
from shared.errors import InvalidPath, InvalidRequest, ValidationError

PREFIX = "/v1/secrets/"


def _fields_error(field: str, message: str) -> ValidationError:
    return ValidationError("request validation failed",
                           details={"fields": [{"field": field, "message": message}]})


def _target(request: web.Request, allowed_actions: tuple[str, ...]) -> tuple[str, str | None]:
    """``(path, action)`` from the raw URL: ``/v1/secrets/a/b:restore`` → ``("a/b", "restore")``."""
    raw = request.rel_url.raw_path[len(PREFIX):]
    path, sep, action = raw.rpartition(":") if ":" in raw else (raw, "", "")
    if sep and action not in allowed_actions:
        raise InvalidRequest(f"no route for {request.method} {PREFIX}…:{action[:40]}")
    if "%" in path:
        raise InvalidPath("invalid secret path: escaped characters are not allowed",
                          details={"path": path[:520]})
    return validate_path(path), action or None


def _int_query(request: web.Request, name: str, default: int | None, low: int, high: int) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise _fields_error(name, f"must be a whole number from {low} to {high}")
    return int(text)


async def _call(request: web.Request, method: str, payload: dict[str, Any]) -> Any:
    return await request.app[BUS].call("secrets", method, payload, context(request))


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


async def put_secret(request: web.Request) -> web.Response:
    path, _ = _target(request, ())
    body = await read_model(request, PutSecretBody)
    expected = body.expected_version
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        text = if_match.strip().removeprefix("W/").strip('"')
        if not text.isdigit() or len(text) > 9:
            raise _fields_error("If-Match", 'must be a version, like "3"')
        if expected is not None and expected != int(text):
            raise _fields_error("If-Match", "disagrees with expected_version")
        expected = int(text)
    request[AUDIT_FIELDS] = {"value": body.value if isinstance(body.value, str) else orjson.dumps(body.value).decode()}
    quotas = await request.app[GUARD].quotas(context(request).tenant_id or "")
    payload = {**body.model_dump(mode="json"), "path": path, "expected_version": expected,
               "max_secrets": quotas.get("max_secrets")}
    result = await _call(request, "put", payload)
    meta = result["secret"]
    return json_response(meta, status=201 if result["created"] else 200, headers=_etag(meta["version"]))


async def get_secret(request: web.Request) -> web.Response:
    path, action = _target(request, ("versions",))
    if action == "versions":
        limit = _int_query(request, "limit", 100, 1, 1000)
        page = await _call(request, "versions",
                           {"path": path, "limit": limit, "cursor": request.query.get("cursor")})
        return json_response(page)
    version = _int_query(request, "version", None, 1, 2**31 - 1)
    secret = await _call(request, "get", {"path": path, "version": version})
    return json_response(secret, headers=_etag(secret["version"]))


async def list_secrets(request: web.Request) -> web.Response:
    """A page of the secrets under ``prefix``, keeping those the caller may ``list``."""
    limit = _int_query(request, "limit", 100, 1, 1000)
    page = await _call(request, "list", {"prefix": request.query.get("prefix", ""), "limit": limit,
                                         "cursor": request.query.get("cursor")})
    page["items"] = await request.app[GUARD].listable(request, principal(request), page["items"],
                                                      lambda item: f"secrets/{item['path']}")
    return json_response(page)


async def delete_secret(request: web.Request) -> web.Response:
    path, _ = _target(request, ())
    await _call(request, "delete", {"path": path})
    return web.Response(status=204)


async def secret_action(request: web.Request) -> web.Response:
    path, action = _target(request, ("restore", "purge"))
    if action is None:
        raise InvalidRequest(f"no route for POST {PREFIX}…: use :restore or :purge")
    if action == "restore":
        meta = await _call(request, "restore", {"path": path})
        return json_response(meta, headers=_etag(meta["version"]))
    await _call(request, "purge", {"path": path})
    return web.Response(status=204)


def _policy_target(capability: str | None, actions: tuple[str, ...] = ()) -> Any:
    """(resource, capability) of a secret route: ``secrets/<path>`` and the action's capability."""
    def target(request: web.Request) -> tuple[str, str]:
        path, action = _target(request, actions)
        return f"secrets/{path}", capability or action or "read"
    return target


ONE = "/v1/secrets/{path}"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/secrets", list_secrets, scope="secrets:read", query=SecretListQuery,
          errors=("invalid_path", "invalid_cursor")),
    Route("GET", "/v1/secrets/{tail:.+}", get_secret, scope="secrets:read", query=SecretGetQuery,
          target=_policy_target("read", ("versions",)), doc_paths=(ONE, ONE + ":versions"),
          errors=("invalid_path", "secret_not_found", "version_not_found", "secret_expired", "encryption_error",
                  "invalid_cursor")),
    Route("PUT", "/v1/secrets/{tail:.+}", put_secret, scope="secrets:write", target=_policy_target("write"),
          body=PutSecretBody, statuses=(200, 201), doc_paths=(ONE,),
          errors=("invalid_path", "invalid_secret_type", "invalid_duration", "version_conflict", "secret_exists",
                  "encryption_error", "quota_exceeded")),
    Route("DELETE", "/v1/secrets/{tail:.+}", delete_secret, scope="secrets:write",
          target=_policy_target("delete"), statuses=(204,), doc_paths=(ONE,), errors=("invalid_path",
                                                                                        "secret_not_found")),
    Route("POST", "/v1/secrets/{tail:.+}", secret_action, scope="secrets:write",
          target=_policy_target(None, ("restore", "purge")), statuses=(200, 204),
          doc_paths=(ONE + ":restore", ONE + ":purge"), errors=("invalid_path", "secret_not_found")),
)
