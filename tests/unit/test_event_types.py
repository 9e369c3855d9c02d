"""Every event type is described, and the description is what gets published (issue #31, AsyncAPI).

The outbox checks each event against its type's model (``shared.contracts.event_types.check``): an event
type with no description, or with data its description does not say, fails the change that publishes it —
here on purpose, and in every e2e test that publishes one. Below: each described type has an owner, a summary
and described fields; every event type named in the services' code is described; and the AsyncAPI document
made from the models is whole (every reference resolves, every payload a valid JSON Schema).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from shared import asyncapi
from shared.contracts.event_types import EVENT_TYPES, check
from shared.errors import InternalError
from shared.registry import EVENT_OWNERS, owner_of

ROOT = Path(__file__).resolve().parents[2]
#: an event type in code: one of the owners' prefixes, a dot, words (what f-strings complete is left out)
_LITERAL = re.compile(r"""["'](?:""" + "|".join(EVENT_OWNERS) + r""")\.[a-z_]+(?:\.[a-z_]+)*["']""")


def test_every_described_type_has_an_owner_a_summary_and_described_fields() -> None:
    for event_type, described in EVENT_TYPES.items():
        assert owner_of(event_type) is not None, event_type
        assert described.summary.strip(), event_type
        assert (described.data.__doc__ or "").strip(), f"{described.data.__name__} has no description"
        for name, field in described.data.model_fields.items():
            assert field.description, f"{described.data.__name__}.{name} has no description"


def test_every_event_type_named_in_the_code_is_described() -> None:
    named: set[str] = set()
    for path in (ROOT / "services").rglob("*.py"):
        named |= {m.group(0)[1:-1] for m in _LITERAL.finditer(path.read_text())}
    # the secrets service names its types by their last word (``secret.{kind}``), leases by their end
    named |= {f"secret.{k}" for k in ("created", "updated", "deleted", "restored", "purged", "expired")}
    named |= {"lease.revoked", "lease.expired"}
    assert named, "the scan found nothing: it would prove nothing"
    missing = sorted(t for t in named if t not in EVENT_TYPES)
    assert not missing, f"published but not described: {missing}"


def test_the_outbox_refuses_an_undescribed_type_or_data_its_description_does_not_say() -> None:
    check("secret.updated", {"path": "app/db", "version": 2, "secret_type": "generic"})
    check("tests.anything", {"whatever": 1})  # no service's type: the bus's own tests publish those
    with pytest.raises(InternalError, match="not described"):
        check("secret.exploded", {"path": "a"})
    with pytest.raises(InternalError, match="value"):
        check("secret.updated", {"path": "a", "version": 1, "secret_type": "generic", "value": "s3cret"})
    with pytest.raises(InternalError, match="version"):
        check("secret.updated", {"path": "a", "version": "two", "secret_type": "generic"})
    with pytest.raises(InternalError) as refused:
        check("lease.created", {"lease_id": "l", "engine": "e", "role": "r", "expires_at": "x", "password": "pw"})
    assert "pw" not in refused.value.message  # the field is named, never a value


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_asyncapi_document_is_whole() -> None:
    doc = asyncapi.document("9.9.9")
    assert doc["asyncapi"] == "3.0.0" and doc["info"]["version"] == "9.9.9"
    assert {ch["address"] for ch in doc["channels"].values()} == set(EVENT_TYPES)
    for section in ("channels", "operations"):
        assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+", key) for key in doc[section])
    for section in ("messages", "schemas"):
        assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+", key) for key in doc["components"][section])
    for ref in _refs(doc):
        _resolve(doc, ref)
    for operation in doc["operations"].values():
        assert operation["action"] == "receive"
    for key, message in doc["components"]["messages"].items():
        assert message["summary"] and message["description"], key
        payload = {**_resolve(doc, message["payload"]["$ref"]), "components": doc["components"]}
        Draft202012Validator.check_schema(payload)
        event_type = message["name"]
        sample = {"id": "5b0c0f6e-0000-4000-8000-000000000000", "type": event_type, "tenant_id": "ten_1",
                  "occurred_at": "2026-01-01T00:00:00Z", "request_id": None, "data": {}}
        errors = list(Draft202012Validator(payload).iter_errors(sample))
        required = [n for n, f in EVENT_TYPES[event_type].data.model_fields.items() if f.is_required()]
        assert bool(errors) == bool(required), (event_type, errors)
