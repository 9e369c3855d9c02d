"""Request context on the wire, and the redaction safety net."""

from __future__ import annotations

import time

import pytest
import structlog
from structlog.testing import capture_logs

from shared.context import RequestContext, sane_request_id
from shared.logging import PROCESSORS, REDACTED, redact


@pytest.mark.parametrize("bad", [None, "", "has space", "x" * 200, "a\nb", "ünï", "<script>", "-lead"])
def test_insane_request_ids_are_replaced(bad: str | None) -> None:
    rid = sane_request_id(bad)
    assert rid.startswith("req_") and rid != bad


def test_sane_request_ids_are_kept() -> None:
    assert sane_request_id("req_abc-123.X:y") == "req_abc-123.X:y"


def test_context_survives_amqp_headers() -> None:
    ctx = RequestContext(request_id="req_1", tenant_id="ten_a", identity_id="idn_b",
                         scopes=("admin", "pki")).with_deadline(5)
    back = RequestContext.from_headers({k: v.encode() if isinstance(v, str) else v
                                        for k, v in ctx.to_headers().items()})
    assert back.request_id == "req_1" and back.tenant_id == "ten_a"
    assert back.scopes == ("admin", "pki") and abs((back.deadline or 0) - (ctx.deadline or 0)) < 1e-3
    assert not back.expired()


def test_deadline_only_shrinks_and_expires() -> None:
    ctx = RequestContext(deadline=time.time() - 1)
    assert ctx.expired()
    assert ctx.with_deadline(60).deadline == ctx.deadline
    assert RequestContext.from_headers({"x-deadline": "junk"}).deadline is None


def test_redaction_blanks_sensitive_keys_and_token_shapes() -> None:
    jwt = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    event = {
        "event": f"got {jwt}",
        "client_secret": "cs_abc",
        "nested": {"password": "hunter2", "ok": "fine", "url": "amqp://guest:pw@host/"},
        "header": "Bearer abc.def",
        "pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        "hook": "whsec_MDEyMzQ1Njc4OWFi",
    }
    out = redact(None, "info", dict(event))
    flat = repr(out)
    for leaked in (jwt, "cs_abc", "hunter2", "abc.def", "AAAA", "whsec_MDEy", ":pw@"):
        assert leaked not in flat
    assert out["client_secret"] == REDACTED and out["nested"]["ok"] == "fine"


def test_context_is_merged_into_every_line() -> None:
    RequestContext(request_id="req_ctx1").bind()
    with capture_logs(processors=PROCESSORS[:1]) as logs:
        structlog.get_logger("t").info("something", value="s3cr3t")
    assert logs[0]["request_id"] == "req_ctx1"


def test_logged_exceptions_keep_their_frames_but_not_their_message() -> None:
    value = "s3cr3t-" + "value"  # a runtime value, as a secret being written would be
    with capture_logs(processors=PROCESSORS) as logs:
        try:
            raise ValueError(f"invalid input for query argument $3: {value!r}")
        except ValueError:
            structlog.get_logger("t").exception("crashed")
    rendered = logs[0]["exception"]
    assert "s3cr3t-value" not in repr(logs)
    assert "builtins.ValueError (message withheld)" in rendered
    assert "test_logged_exceptions_keep_their_frames_but_not_their_message" in rendered  # the frame is there
