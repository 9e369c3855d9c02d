"""A schemathesis check: every error body is the envelope, with a vocabulary code and its status."""

from __future__ import annotations

from typing import Any

import schemathesis

from shared.errors import REGISTRY


@schemathesis.check
def error_is_the_envelope(ctx: Any, response: Any, case: Any) -> None:
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not the envelope: {body!r}"
    err = body["error"]
    assert set(err) == {"code", "message", "details", "request_id"}, f"envelope keys: {sorted(err)}"
    assert err["code"] in REGISTRY, f"{err['code']!r} is not in the vocabulary"
    assert REGISTRY[err["code"]].status == response.status_code, f"{err['code']} answered {response.status_code}"
    headers = {k.lower(): v for k, v in dict(response.headers).items()}
    request_id = headers.get("x-request-id")
    if isinstance(request_id, list):
        request_id = request_id[0]
    assert err["request_id"] == request_id, "request_id differs from X-Request-ID"
    for name in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"):
        assert name in headers, f"{name} missing"
    return None


#: 400s a request the description allows can still get, each for a reason no JSON Schema can state
SEMANTIC_REFUSALS = {
    "invalid_cursor": "a cursor is signed by the server; one made up is refused",
    "invalid_duration": "durations of zero or over 100 years match the grammar",
    "invalid_policy": "a rule's meaning (capabilities, conditions) is checked by the policy engine",
    "invalid_glob": "a glob is compiled by the server",
    "invalid_config": "an engine's config depends on its type, and is checked by connecting",
    "webhook_url_invalid": "the host must resolve to an address the operator allows",
    "invalid_role": "default_ttl against max_ttl, fields of another engine type",
    "csr_invalid": "a CSR's signature and encoding", "domain_not_allowed": "a role's name rules",
    "key_type_mismatch": "a CSR's key against its role", "ttl_exceeds_max": "a ttl against its role",
}
#: operations that refuse a well-formed request for the state of what it names, with invalid_request and a
#: message saying what to do first (no code of the vocabulary means "in use" for these; see docs/api.md)
STATE_REFUSALS = {  # what the answer's message starts with
    ("DELETE", "/v1/pki/acme/accounts/{id}"): "orders use it: delete them first",  # the account
    ("DELETE", "/v1/pki/acme/dns-providers/{id}"): "orders use it: delete them first",  # the DNS provider
    # the fuzzed platform runs the file seal: no root key to rotate (tests/e2e/test_secrets_storage.py)
    ("POST", "/v1/sys/rotate-root"): "COFFER_SEAL=file has no root key to rotate",
}
#: pydantic's messages for a request's shape: a request the description allows must never get one
SHAPE_MESSAGES = ("Field required", "Input should", "String should", "Extra inputs", "List should",
                  "Value should", "Dictionary should", "Tuple should", "Object has", "Invalid JSON")


@schemathesis.check
def valid_requests_are_refused_only_for_what_no_schema_says(ctx: Any, response: Any, case: Any) -> None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code not in (400, 422):
        return None
    error = response.json().get("error", {})
    code = error.get("code")
    if code == "validation_error":
        for field in error.get("details", {}).get("fields", []):
            message = str(field.get("message", ""))
            assert not message.startswith(SHAPE_MESSAGES), \
                f"a request the description allows was refused for its shape: {field}"
        return None
    if code == "invalid_request" and (case.method.upper(), case.path) in STATE_REFUSALS:
        assert str(error.get("message", "")).startswith(STATE_REFUSALS[(case.method.upper(), case.path)]), error
        return None
    assert code in SEMANTIC_REFUSALS, f"a request the description allows was refused with {code}"
    return None
