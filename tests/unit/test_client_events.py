"""The client's reading of the event stream (coffer_client._events), without a server: frames out of lines,
and what each frame makes the iterator do (yield, resume, raise)."""

from __future__ import annotations

import json

import pytest
from coffer_client import errors
from coffer_client._events import Event, SseReader, _Reconnect, _Resume


def frames(text: str) -> list[tuple[str, str | None, str]]:
    reader = SseReader()
    return [f for line in text.splitlines(keepends=True) if (f := reader.feed(line)) is not None]


def test_frames_are_read_as_the_sse_spec_says() -> None:
    text = (": keep-alive\n\n"                                   # a comment: nothing
            "id: e1\nevent: secret.updated\ndata: {\"a\": 1}\n\n"
            "event: reset\ndata: {\"reason\": \"not_kept\"}\n\n"  # no id
            "data: one\ndata: two\n\n"                          # data lines joined, the default type
            "id: only-an-id\n\n")                              # no data: not dispatched
    assert frames(text) == [("secret.updated", "e1", '{"a": 1}'), ("reset", None, '{"reason": "not_kept"}'),
                            ("message", None, "one\ntwo")]
    assert frames("id:e2\r\nevent:x.y\r\ndata:{}\r\n\r\n") == [("x.y", "e2", "{}")]  # no space, CRLF


def event(kind: str, event_id: str, data: dict[str, object]) -> tuple[str, str, str]:
    return kind, event_id, json.dumps({"id": event_id, "type": kind, "tenant_id": "ten_1", "occurred_at": "t",
                                       "request_id": "req_1", "data": data})


def test_events_are_yielded_and_remembered_for_the_resume() -> None:
    state = _Resume(["secret.*", "lease.*"], "app/**", None)
    assert state.call().params == {"types": "secret.*,lease.*", "path_pattern": "app/**"}
    assert "Last-Event-ID" not in state.call().headers
    got = state.frame(*event("secret.updated", "e1", {"path": "app/db", "version": 2}))
    assert got == Event("e1", "secret.updated", {"path": "app/db", "version": 2}, "ten_1", "t", "req_1")
    assert state.call().headers["Last-Event-ID"] == "e1"
    # an id not kept: a reset the program sees (read the state again); the last id stays
    reset = state.frame("reset", None, '{"reason": "not_kept"}')
    assert reset is not None and (reset.type, reset.id) == ("reset", None) and state.last_id == "e1"
    # cut for reading too slowly: back at once, from the last id, and nothing to yield
    with pytest.raises(_Reconnect) as again:
        state.frame("reset", None, '{"reason": "too_far_behind"}')
    assert again.value.wait == 0.0 and state.last_id == "e1"


@pytest.mark.parametrize(("kind", "cls"), [("token_expired", errors.TokenExpired),
                                           ("token_revoked", errors.TokenRevoked)])
def test_a_stream_ended_by_its_token_raises(kind: str, cls: type[Exception]) -> None:
    state = _Resume(None, None, "e9")
    with pytest.raises(cls):
        state.frame(kind, None, json.dumps({"code": kind, "message": "the stream's token has expired"}))


def test_waits_grow_and_a_frame_resets_them() -> None:
    state = _Resume(None, None, None)
    waits = [state.backoff() for _ in range(8)]
    assert waits == sorted(waits) and waits[0] == 0.5 and waits[-1] == 10.0
    state.frame(*event("lease.renewed", "e2", {}))
    assert state.backoff() == 0.5
