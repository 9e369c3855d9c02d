"""A request's strings reach PostgreSQL, which stores no NUL: the gateway refuses one anywhere in a body,
however deeply nested, as the caller's 422 — never a 500, never a recursion error."""

from __future__ import annotations

import orjson
import pytest

from services.gateway.edge.routes import _refuse_nul
from shared.errors import ValidationError


@pytest.mark.parametrize(("body", "field"), [
    ({"a": "x\x00"}, "a"), ({"m": {"k\x00": "v"}}, "m"), ({"l": ["ok", "b\x00"]}, "l.1")])
def test_a_nul_is_refused_naming_where_it_is(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _refuse_nul(body, "body")
    assert caught.value.details["fields"][0]["field"] == field


def test_a_body_nested_as_deep_as_json_allows_is_walked_without_recursion() -> None:
    deep = orjson.loads(b"[" * 1000 + b'"a\\u0000"' + b"]" * 1000)
    with pytest.raises(ValidationError) as caught:
        _refuse_nul({"v": deep}, "body")
    assert len(caught.value.details["fields"][0]["field"]) <= 200
    _refuse_nul({"v": orjson.loads(b"[" * 1000 + b'"fine"' + b"]" * 1000)}, "body")
