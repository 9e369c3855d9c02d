"""``GET /v1/openapi.json``: OpenAPI 3.1, generated from the route table and the pydantic models.

Each route contributes its method and path, its body and query models (their
JSON Schemas), its success statuses and media type, and the error codes it
can answer: the route's own plus those the middlewares add (authentication,
tenant, scope, policy, limits, maintenance; ``validation_error`` wherever a
body or a query is parsed). Every error response is the one envelope, its
``code`` restricted to the codes of that status.

What the description promises is what the server checks, from the same
models: path parameters carry the grammar the server holds them to (a secret
path segment as api.md §5 says it; role and engine names; serials), query
parameters are never ``null`` (absent is how a query says "none"), a body is
``required`` exactly when its model has a required field, and a create
(``201``) links to the operations that take the id it returns, so a stateful
fuzzer can chain create → get → delete.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from pydantic import BaseModel, RootModel

from services.gateway.edge.routes import Route
from shared.errors import REGISTRY

ALWAYS = ("invalid_request", "rate_limited", "internal_error", "service_unavailable")
WITH_BODY = ("validation_error",)
AUTHENTICATED = ("authentication_required", "token_expired", "token_invalid", "token_revoked", "maintenance_mode",
                 "feature_disabled", "tenant_access_denied", "tenant_not_found", "quota_exceeded", "storage_error",
                 "insufficient_scope", "access_denied", "ip_not_allowed", "time_window_violation", "mfa_required")
_PARAM = re.compile(r"\{([a-z_]+)(?::[^}]*)?\}")

#: one segment of a secret path (api.md §5); a path of several is the same joined by literal ``/``,
#: which a path parameter can't carry, so the description names one segment
SECRET_SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: names of PKI roles, engines and engine roles
NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: ids the API hands out (``ten_…``, ``idn_…``, ``lea_…``): an unknown one is not found
ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "path": {"type": "string", "pattern": SECRET_SEGMENT},
    "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
    "role": {"type": "string", "pattern": NAME},
    "serial": {"type": "string", "pattern": r"^[0-9a-fA-F]{1,40}$"},
    # an OCSP request, base64: one that does not decode is answered by OCSP itself (malformedRequest, 200)
    "request": {"type": "string", "minLength": 1},
}


_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _json_schema(model: type[BaseModel], **kwargs: Any) -> dict[str, Any]:
    """``model``'s JSON Schema, bounds in JSON Schema's words: pydantic leaves ``ge``/``le`` as they are on
    a number wrapped in a validator (``JsonInt``), which a reader of the description would not apply, and
    writes a dict of constrained keys as ``patternProperties``, which does not say other keys are refused."""
    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("default", 0) is None and node.get("type") not in (None, "null"):
                node = {k: v for k, v in node.items() if k != "default"}  # "absent", not null (SkipJsonSchema)
            patterns = node.get("patternProperties")
            if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
                # a dict whose keys are constrained: pydantic says patternProperties, which leaves a key
                # outside the pattern free to hold anything; every key matches it, every value its schema
                (pattern, values), = patterns.items()
                node = {**{k: v for k, v in node.items() if k != "patternProperties"},
                        "propertyNames": {"pattern": pattern}, "additionalProperties": values}
            return {_BOUNDS.get(k, k) if k in _BOUNDS and node.get("type") in ("integer", "number") else k: fix(v)
                    for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node
    return dict(fix(model.model_json_schema(**kwargs)))


def _schema(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A body's schema among the components, under its class name — or, when another module has a
    class of that name (the PKI's and the lease service's ``RoleBody``), its module's name before it."""
    name = model.__name__
    owner = components.setdefault("x-owners", {})
    if owner.get(name, model) is not model:
        name = model.__module__.rsplit(".", 1)[-1].title() + name
    owner[name] = model
    schema = _json_schema(model, ref_template="#/components/schemas/{model}")
    for def_name, definition in schema.pop("$defs", {}).items():
        components[def_name] = definition
    components[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _envelope(codes: list[str]) -> dict[str, Any]:
    return {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "details", "request_id"],
            "properties": {"code": {"type": "string", "enum": sorted(codes)}, "message": {"type": "string"},
                           "details": {"type": "object"}, "request_id": {"type": "string"}}}},
    }


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without ``null``: leaving the parameter out is its "none"."""
    options = [o for o in prop.get("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **options[0]}
    if "default" in prop and prop["default"] is None:
        prop = {k: v for k, v in prop.items() if k != "default"}
    return prop


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = _json_schema(model)
    required = set(schema.get("required", []))
    return [{"name": name, "in": "query", "required": name in required, "schema": _not_null(prop)}
            for name, prop in schema.get("properties", {}).items()]


def _body_required(model: type[BaseModel]) -> bool:
    """A body with required fields, or one of several shapes (a ``RootModel`` union): it can't be left out."""
    return issubclass(model, RootModel) or bool(model.model_json_schema().get("required"))


def _operation(route: Route, path: str, components: dict[str, Any]) -> dict[str, Any]:
    codes = [*ALWAYS, *route.errors]
    body = route.doc_bodies.get(path, route.body)
    if body is not None or route.query is not None:
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
        "parameters": [{"name": name, "in": "path", "required": True,
                        "schema": route.params.get(name) or PARAM_SCHEMAS.get(name) or {"type": "string",
                                                                                         "pattern": ID}}
                       for name in _PARAM.findall(path)],
        "responses": {},
    }
    if route.query is not None:
        op["parameters"] += _query_parameters(route.query)
    if body is not None:
        op["requestBody"] = {"required": _body_required(body),
                             "content": {"application/json": {"schema": _schema(body, components)}}}
    for status in route.statuses:
        answer = {"type": "object"} if route.media == "application/json" else {"type": "string"}
        content = {} if status == 204 else {route.media: {"schema": answer}}
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


#: links no path can tell: a resource made by one operation that another takes in its body or under another
#: path. ``(source, status, target, parameters, request body)``, operations as ``"METHOD path"``; the body
#: is merged into what the fuzzer generates for the target.
CROSS_LINKS: tuple[tuple[str, str, str, dict[str, str], dict[str, str] | None], ...] = (
    # roles after CAs, CSRs after roles, certificates after :issue and :sign
    ("POST /v1/pki/cas", "201", "PUT /v1/pki/roles/{name}", {}, {"ca_id": "$response.body#/id"}),
    ("PUT /v1/pki/roles/{name}", "201", "POST /v1/pki/csrs", {}, {"role": "$request.path.name"}),
    *((f"POST /v1/pki/roles/{{name}}:{verb}", "201", target, {"serial": "$response.body#/serial"}, None)
      for verb in ("issue", "sign")
      for target in ("GET /v1/pki/certificates/{serial}", "POST /v1/pki/certificates/{serial}:revoke")),
    # engine roles after engines, leases after credentials
    ("POST /v1/engines", "201", "PUT /v1/engines/{name}/roles/{role}", {"name": "$response.body#/name"}, None),
    ("POST /v1/engines", "201", "POST /v1/leases:revoke-prefix", {}, {"engine": "$response.body#/name"}),
    *(("POST /v1/engines/{name}/roles/{role}:credentials", "201", target, {"id": "$response.body#/lease_id"}, None)
      for target in ("GET /v1/leases/{id}", "POST /v1/leases/{id}:renew", "POST /v1/leases/{id}:revoke")),
    # deliveries after webhooks (a ping makes one), subscriptions to a webhook
    *((source, status, target, {"id": "$request.path.id", "did": f"$response.body#/{field}"}, None)
      for source, status, field in (("POST /v1/webhooks/{id}:ping", "202", "delivery_id"),
                                    ("GET /v1/webhooks/{id}/deliveries", "200", "items/0/id"))
      for target in ("GET /v1/webhooks/{id}/deliveries/{did}", "POST /v1/webhooks/{id}/deliveries/{did}:retry")),
    ("POST /v1/webhooks", "201", "POST /v1/subscriptions", {}, {"webhook_id": "$response.body#/id"}),
    # bindings of an identity to a policy
    ("POST /v1/identities", "201", "POST /v1/bindings", {}, {"identity_id": "$response.body#/id"}),
    ("POST /v1/policies", "201", "POST /v1/bindings", {}, {"policy": "$response.body#/name"}),
    # access requests for a policy
    ("POST /v1/policies", "201", "POST /v1/access-requests", {}, {"policy": "$response.body#/name"}),
)


def _add_link(source: dict[str, Any], status: str, target: dict[str, Any], parameters: dict[str, str],
              body: dict[str, str] | None = None) -> None:
    link: dict[str, Any] = {"operationId": target["operationId"]}
    if parameters:
        link["parameters"] = parameters
    if body:
        link["requestBody"] = body
    source["responses"][status].setdefault("links", {})[f"{target['operationId']}"] = link


def _link(paths: dict[str, dict[str, Any]]) -> None:
    """Links for a stateful fuzzer, so that what takes an id is called with one that exists:

    - a create (201, or 202 for a job, on a collection) links to the operations on the item it made
      (``/{id}``, its actions and sub-resources) with the id from its answer;
    - a ``PUT`` that creates an item under a name the caller chose (``201``) links to the other
      operations on that item, with the path it was called with;
    - ``CROSS_LINKS``: what the path can't tell (a role's CA, a lease of a credential, a delivery of a
      ping, a binding's identity and policy).
    """
    for path, operations in paths.items():
        create = operations.get("post")
        made = next((s for s in ("201", "202") if create is not None and s in create["responses"]), None)
        if create is None or made is None:
            continue
        for item_path, item_ops in paths.items():
            found = re.fullmatch(re.escape(path) + r"/\{([a-z_]+)\}(?::[a-z-]+|(?:/[a-z-]+)+)?", item_path)
            if not found or found[1] not in ("id", "name"):
                continue
            for op in item_ops.values():
                _add_link(create, made, op, {found[1]: f"$response.body#/{found[1]}"})
    for path, operations in paths.items():
        put = operations.get("put")
        params = _PARAM.findall(path)
        if put is None or "201" not in put["responses"] or not params:
            continue
        for item_path, item_ops in paths.items():
            if item_path == path or re.fullmatch(re.escape(path) + r"(?::[a-z-]+|(?:/[a-z-]+)+)", item_path):
                for op in item_ops.values():
                    if op is not put:
                        _add_link(put, "201", op, {p: f"$request.path.{p}" for p in params})
    by_key = {f"{method.upper()} {path}": op for path, ops in paths.items() for method, op in ops.items()}
    for source, status, target, parameters, body in CROSS_LINKS:
        if source in by_key and target in by_key and status in by_key[source]["responses"]:
            _add_link(by_key[source], status, by_key[target], parameters, body)


def document(routes: tuple[Route, ...] | list[Route], version: str, *, https_only: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 description of ``routes``. ``https_only``: outbound URLs (webhooks) must be https,
    as the server is configured (``COFFER_OUTBOUND_ALLOW_HTTP`` unset)."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for route in routes:
        for path in route.doc_paths or (route.path,):
            paths[path][route.method.lower()] = _operation(route, path, components)
    _link(paths)
    if https_only:
        for name in ("WebhookCreate", "WebhookPatch"):
            url = components.get(name, {}).get("properties", {}).get("url")
            if url is not None:
                target = next((o for o in url.get("anyOf", []) if o.get("type") == "string"), url)
                target["pattern"] = "^https://"
    return {
        "openapi": "3.1.0",
        "info": {"title": "Coffer API", "version": version,
                 "description": "Self-hosted secrets platform. Every error is the envelope "
                                "{error: {code, message, details, request_id}}; branch on error.code."},
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted((k, v) for k, v in components.items() if k != "x-owners")),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
    }
