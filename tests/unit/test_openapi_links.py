"""The description's links, which a stateful fuzzer follows (services/gateway/edge/openapi.py; issue #27 item 9):
every operation that takes an id is reached from one that makes it, with parameters the target has."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from services.gateway.bootstrap import ROUTES
from services.gateway.edge import openapi


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    document = openapi.document(ROUTES, "test")
    validate(document)
    return document


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{operationId: ("METHOD path", operation)}``."""
    return {op["operationId"]: (f"{method.upper()} {path}", op)
            for path, ops in doc["paths"].items() for method, op in ops.items()}


def links(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """``(source, status, target, link)``, operations as ``"METHOD path"``."""
    by_id = operations(doc)
    return [(f"{method.upper()} {path}", status, by_id[link["operationId"]][0], link)
            for path, ops in doc["paths"].items() for method, op in ops.items()
            for status, response in op["responses"].items() for link in response.get("links", {}).values()]


def test_every_link_names_an_operation_and_its_parameters(doc: dict[str, Any]) -> None:
    by_id = operations(doc)
    found = links(doc)
    assert len(found) > 60
    for source, status, _, link in found:
        assert link["operationId"] in by_id, (source, link)
        target = by_id[link["operationId"]][1]
        names = {p["name"] for p in target["parameters"]}
        assert set(link.get("parameters", {})) <= names, (source, link)
        assert status.startswith("2"), (source, status)
        if "requestBody" in link:
            schema_ref = target["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            properties = doc["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]["properties"]
            assert set(link["requestBody"]) <= set(properties), (source, link)


@pytest.mark.parametrize(("source", "target", "carries"), [
    # roles after CAs, CSRs after roles, certificates after issuing
    ("POST /v1/pki/cas", "PUT /v1/pki/roles/{name}", {"ca_id": "$response.body#/id"}),
    ("PUT /v1/pki/roles/{name}", "POST /v1/pki/roles/{name}:issue", {"name": "$request.path.name"}),
    ("PUT /v1/pki/roles/{name}", "POST /v1/pki/csrs", {"role": "$request.path.name"}),
    ("POST /v1/pki/roles/{name}:issue", "POST /v1/pki/certificates/{serial}:revoke",
     {"serial": "$response.body#/serial"}),
    # engine roles after engines, leases after credentials
    ("POST /v1/engines", "PUT /v1/engines/{name}/roles/{role}", {"name": "$response.body#/name"}),
    ("PUT /v1/engines/{name}/roles/{role}", "POST /v1/engines/{name}/roles/{role}:credentials",
     {"name": "$request.path.name", "role": "$request.path.role"}),
    ("POST /v1/engines/{name}/roles/{role}:credentials", "POST /v1/leases/{id}:renew",
     {"id": "$response.body#/lease_id"}),
    ("POST /v1/engines/{name}/roles/{role}:credentials", "GET /v1/leases/{id}", {"id": "$response.body#/lease_id"}),
    # deliveries after webhooks
    ("POST /v1/webhooks/{id}:ping", "GET /v1/webhooks/{id}/deliveries/{did}",
     {"id": "$request.path.id", "did": "$response.body#/delivery_id"}),
    ("GET /v1/webhooks/{id}/deliveries", "POST /v1/webhooks/{id}/deliveries/{did}:retry",
     {"id": "$request.path.id", "did": "$response.body#/items/0/id"}),
    ("POST /v1/webhooks", "POST /v1/subscriptions", {"webhook_id": "$response.body#/id"}),
    # what a create made, under a path of more than one segment
    ("POST /v1/identities", "DELETE /v1/identities/{id}/mfa/totp", {"id": "$response.body#/id"}),
    ("POST /v1/identities", "POST /v1/bindings", {"identity_id": "$response.body#/id"}),
    ("PUT /v1/secrets/{path}", "POST /v1/secrets/{path}:restore", {"path": "$request.path.path"}),
])
def test_what_takes_an_id_is_linked_from_what_makes_it(doc: dict[str, Any], source: str, target: str,
                                                       carries: dict[str, str]) -> None:
    matching = [link for s, _, t, link in links(doc) if s == source and t == target]
    assert matching, f"no link {source} -> {target}"
    assert any({**link.get("parameters", {}), **link.get("requestBody", {})} == carries for link in matching), matching


def test_a_dict_of_constrained_keys_refuses_other_keys(doc: dict[str, Any]) -> None:
    """pydantic writes ``dict[Key, V]`` with a key pattern as ``patternProperties``, which lets a key outside the
    pattern hold anything: the fuzzer sent ``{"vhosts": {"\\x8b": [1]}}`` as a valid request, and the 422 failed
    the run. The description says what the server checks: every key matches, every value is a ``V``."""
    vhosts = doc["components"]["schemas"]["LeaseRoleBody"]["properties"]["vhosts"]["anyOf"][0]
    assert "patternProperties" not in vhosts
    assert vhosts["propertyNames"]["pattern"].startswith("^[^\\x00")
    assert vhosts["additionalProperties"]["type"] == "object"
    assert "patternProperties" not in str(doc)


def test_approving_ones_own_csr_is_a_declared_refusal(doc: dict[str, Any]) -> None:
    """Reached with a real CSR, ``:approve`` by its submitter answered 403 ``forbidden``, which the description
    did not list (schemathesis ST108)."""
    refusal = doc["paths"]["/v1/pki/csrs/{id}:approve"]["post"]["responses"]["403"]
    codes = refusal["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"]
    assert "forbidden" in codes
