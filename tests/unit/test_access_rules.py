"""Access requests without I/O (api.md §14): a grant's end in the cached rules, what makes a policy
requestable, and where access.* events are delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.gateway.iam.authorizer import BoundRules, bound_rules
from services.gateway.iam.models import PolicyBody
from services.gateway.iam.policy import decide, parse_rules
from shared.contracts import parse
from shared.contracts.events import Event, resource_of
from shared.errors import CofferError

READ = [{"effect": "allow", "paths": ["secrets/app/**"], "capabilities": ["read"]}]
PROD = [{"effect": "allow", "paths": ["secrets/prod/**"], "capabilities": ["read"]}]


def allowed(rules: Any, resource: str) -> bool:
    try:
        decide(rules, resource, "read", ip=None)
    except CofferError:
        return False
    return True


def test_a_grant_counts_until_its_end_and_not_at_it() -> None:
    end = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    bound = bound_rules([(READ, None), (PROD, end)], "idn_x")
    before, at = end.timestamp() - 0.001, end.timestamp()
    assert allowed(bound.at(before), "secrets/prod/db") and allowed(bound.at(before), "secrets/app/x")
    assert not allowed(bound.at(at), "secrets/prod/db")  # the end is exclusive
    assert allowed(bound.at(at + 3600), "secrets/app/x")  # standing rules stay
    assert bound.at(at) == parse_rules(READ)


def test_standing_rules_are_parsed_policy_by_policy() -> None:
    """An identity may hold many policies: only each policy is limited to 100 rules, not their sum."""
    many = [READ * 60, PROD * 60]
    assert len(bound_rules([(rules, None) for rules in many], "idn_x").standing) == 120


def test_a_stored_policy_that_no_longer_parses_grants_nothing() -> None:
    broken = [{"effect": "allow", "paths": ["secrets/**"], "capabilities": ["teleport"]}]
    assert bound_rules([(READ, None), (broken, datetime.now(UTC) + timedelta(hours=1))], "idn_x") == BoundRules()


def body(**request: Any) -> dict[str, Any]:
    return {"rules": READ, "request": {"max_duration": "1h", **request}}


@pytest.mark.parametrize(("request_rule", "field"), [
    ({"max_duration": "31d"}, "request.max_duration"),
    ({"approvals": 0}, "request.approvals"),
    ({"approvals": 11}, "request.approvals"),
    ({"approvals": "2"}, "request.approvals"),
    ({"approvers": []}, "request.approvers"),
    ({"approvers": ["someone"]}, "request.approvers.0"),
    ({"approvers": ["policy:../x"]}, "request.approvers.0"),
    ({"approvers": ["idn_ab"], "approvals": 2}, "request"),
    ({"approvers": ["idn_ab", "idn_ab"], "approvals": 2}, "request"),  # the same person twice is one
    ({"why": "x"}, "request.why"),
])
def test_what_makes_a_policy_requestable_is_checked(request_rule: dict[str, Any], field: str) -> None:
    with pytest.raises(CofferError) as refused:
        parse(PolicyBody, body(**request_rule))
    assert refused.value.code == "validation_error"
    assert field in [f["field"] for f in refused.value.details["fields"]], refused.value.details


def test_a_max_duration_that_is_no_duration_is_invalid_duration() -> None:
    for text in ("0s", "an hour"):
        with pytest.raises(CofferError) as refused:
            parse(PolicyBody, body(max_duration=text))
        assert refused.value.code == "invalid_duration"


def test_approvers_by_id_and_by_policy() -> None:
    rule = parse(PolicyBody, body(approvals=3, approvers=["idn_0a", "policy:oncall-leads"])).request
    assert rule is not None and rule.approvals == 3  # a policy may have any number of members
    assert parse(PolicyBody, {"rules": READ}).request is None


def test_access_events_go_to_whoever_may_list_the_policy() -> None:
    event = Event(type="access.approved", tenant_id="ten_1", data={"id": "acr_1", "policy": "prod-read"})
    assert resource_of(event) == "policies/prod-read"
