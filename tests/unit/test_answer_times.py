"""Moments in answers: RFC 3339 UTC with ``Z``, from both serializers (shared/contracts/times.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import orjson

from services.gateway.edge.routes import json_response, model_response
from shared.contracts.secrets import SecretMeta
from shared.contracts.times import answer_json, rfc3339


def test_rfc3339_writes_utc_with_z_whatever_the_zone() -> None:
    assert rfc3339(datetime(2026, 11, 25, 10, 0, tzinfo=UTC)) == "2026-11-25T10:00:00Z"
    assert rfc3339(datetime(2026, 11, 25, 12, 0, tzinfo=timezone(timedelta(hours=2)))) == "2026-11-25T10:00:00Z"
    assert rfc3339(datetime(2026, 11, 25, 10, 0, 0, 5)) == "2026-11-25T10:00:00.000005Z"  # naive: UTC


def test_answer_json_writes_every_datetime_in_it_so() -> None:
    moment = datetime(2026, 11, 25, 10, 0, tzinfo=timezone(timedelta(hours=-5)))
    body = orjson.loads(answer_json({"created_at": moment, "items": [{"at": moment}], "day": date(2026, 1, 2),
                                     "clock": time(9, 30), "n": 1, "none": None}))
    assert body == {"created_at": "2026-11-25T15:00:00Z", "items": [{"at": "2026-11-25T15:00:00Z"}],
                    "day": "2026-01-02", "clock": "09:30:00", "n": 1, "none": None}


def test_both_kinds_of_gateway_answer_write_z() -> None:
    moment = datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)
    dict_answer = json_response({"created_at": moment})
    assert dict_answer.body == b'{"created_at":"2026-11-25T10:00:00.123456Z"}'
    meta = SecretMeta(path="a", version=1, secret_type="generic", metadata={}, expires_at=None, created_at=moment,
                      created_by=None, updated_at=moment, deleted_at=None, purge_after=None)
    body = orjson.loads(model_response(meta).body)  # type: ignore[arg-type]
    assert body["created_at"] == body["updated_at"] == "2026-11-25T10:00:00.123456Z"
