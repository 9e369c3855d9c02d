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
