"""``GET /v1/openapi.json``: OpenAPI 3.1, generated from the route table and the pydantic models.

Each route contributes its method and path, its body and query models (their
JSON Schemas), its success statuses, and the error codes it can answer: the
route's own plus those the middlewares add (authentication, tenant, scope,
policy, limits, maintenance). Every error response is the one envelope, its
``code`` restricted to the codes of that status.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from pydantic import BaseModel

from services.gateway.edge.routes import Route
from shared.errors import REGISTRY

ALWAYS = ("invalid_request", "rate_limited", "internal_error", "service_unavailable")
WITH_BODY = ("validation_error",)
AUTHENTICATED = ("authentication_required", "token_expired", "token_invalid", "token_revoked", "maintenance_mode",
                 "feature_disabled", "tenant_access_denied", "tenant_not_found", "quota_exceeded", "storage_error",
                 "insufficient_scope", "access_denied", "ip_not_allowed", "time_window_violation", "mfa_required")
_PARAM = re.compile(r"\{([a-z_]+)(?::[^}]*)?\}")


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _envelope(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "details", "request_id"],
            "properties": {"code": {"type": "string", "enum": sorted(codes)}, "message": {"type": "string"},
                           "details": {"type": "object"}, "request_id": {"type": "string"}}}},
    }


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": prop}
            for name, prop in schema.get("properties", {}).items()]


def _operation(route: Route, path: str, components: dict[str, Any]) -> dict[str, Any]:
    codes = [*ALWAYS, *route.errors]
    if route.body is not None:
        codes += WITH_BODY
    if not route.public:
        codes += AUTHENTICATED
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in dict.fromkeys(codes):
        by_status[REGISTRY[code].status].append(code)
    doc = (route.handler.__doc__ or route.handler.__name__.replace("_", " ")).strip().splitlines()[0]
    op: dict[str, Any] = {
        "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', path.lower()).strip('_')}",
        "summary": doc, "tags": [path.split("/")[2] if path.startswith("/v1/") else "metrics"],
        "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                       for name in _PARAM.findall(path)],
        "responses": {},
    }
    if route.query is not None:
        op["parameters"] += _query_parameters(route.query)
    if route.body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(route.body,
                                                                                                  components)}}}
    for status in route.statuses:
        content = {} if status == 204 else {"application/json": {"schema": {"type": "object"}}}
        op["responses"][str(status)] = {"description": "success", **({"content": content} if content else {})}
    for status, status_codes in sorted(by_status.items()):
        op["responses"][str(status)] = {
            "description": ", ".join(sorted(status_codes)),
            "content": {"application/json": {"schema": _envelope(status_codes)}},
        }
    if not route.public:
        op["security"] = [{"bearer": []}]
    if route.scope:
        op["x-coffer-scope"] = route.scope
    return op


def document(routes: tuple[Route, ...] | list[Route], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``routes``."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for route in routes:
        for path in route.doc_paths or (route.path,):
            paths[path][route.method.lower()] = _operation(route, path, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Coffer API", "version": version,
                 "description": "Self-hosted secrets platform. Every error is the envelope "
                                "{error: {code, message, details, request_id}}; branch on error.code."},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }
