"""Access requests through the gateway (api.md §14, issue #32): ask for a requestable policy, a colleague
approves, the grant ends by itself — on every replica at the same moment.

The module runs twice, on a platform of its own each time: embedded and on RabbitMQ, where a second
gateway process checks that both replicas refuse the requester within a second of ``expires_at``. A
webhook receiver of the module's hears every ``access.*`` event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from services.platform import Platform
from tests.conftest import Api, free_port, initialised, own_platform, remember_secret
from tests.e2e.access_helpers import (
    act,
    acted,
    approver,
    ask,
    asked,
    audited,
    events_of,
    moment,
    readme_receiver,
    refused_at,
    requestable,
)
from tests.e2e.iam_helpers import allow, identity, token
from tests.e2e.method_helpers import Issuer, login, make_method, put_role, serve_issuer
from tests.e2e.receiver import Receiver
from tests.e2e.test_gateway_envelope import assert_envelope
from tests.e2e.test_hardening import far  # noqa: F401 - the second gateway process (RabbitMQ only)
from tests.e2e.test_secrets import put, unique
from tests.integration.test_bus_contract import wait_until


@pytest.fixture(scope="module", params=["embedded", "rabbitmq"])
async def platform(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                   pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform(request.param, tmp_path_factory.mktemp(request.param), pg_dsn) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def hooked(api: Api) -> AsyncIterator[dict[str, Any]]:
    """A receiver subscribed to ``access.*`` (by the root admin, who may list every policy)."""
    receiver = await Receiver().start()
    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": receiver.url})
    assert status == 201, hook
    status, sub, _ = await api.request("POST", "/v1/subscriptions", json={"webhook_id": hook["id"],
                                                                         "event_types": ["access.*"]})
    assert status == 201, sub
    try:
        yield {"receiver": receiver, "secret": remember_secret(hook["secret"])}
    finally:
        await receiver.stop()


@pytest.fixture(scope="module")
async def prod(api: Api) -> dict[str, Any]:
    """A secret under ``<base>/prod``, a requestable policy reading it, someone with no access to it, and
    a colleague who may approve that policy."""
    base = unique("acc")
    value = remember_secret(f"prod-db-{base}")
    status, _, _ = await put(api, f"{base}/prod/db", value)
    assert status == 201
    policy = await requestable(api, [f"secrets/{base}/prod/**"])
    return {"base": base, "path": f"{base}/prod/db", "value": value, "policy": policy,
            "requester": await identity(api, ["secrets:read"]), "approver": await approver(api, [policy])}


async def test_a_grant_of_seconds_ends_by_itself_on_every_replica_while_the_requester_keeps_calling(
        api: Api, far: Api | None, prod: dict[str, Any], hooked: dict[str, Any]) -> None:  # noqa: F811
    asker, boss = prod["requester"], prod["approver"]
    status, body, headers = await api.request("GET", f"/v1/secrets/{prod['path']}", token=asker["token"])
    assert_envelope(status, body, headers, "access_denied")

    made = await asked(api, asker["token"], prod["policy"], "3s")
    assert made["status"] == "pending" and made["requester"] == asker["id"] and made["duration"] == "3s"
    assert made["policy"] == prod["policy"] and made["reason"] == "incident 42" and made["id"].startswith("acr_")
    done = await acted(api, boss["token"], made["id"], "approve", "ok for the incident")
    assert done["status"] == "approved" and done["decided_by"] == boss["id"]
    assert [a["identity_id"] for a in done["approvals"]] == [boss["id"]]
    assert done["approvals"][0]["comment"] == "ok for the incident"
    ends = moment(done["expires_at"])
    assert abs(ends - moment(done["decided_at"]) - 3) < 0.01

    # the grant is a binding, shown with its end and its request
    _, bindings, _ = await api.request("GET", "/v1/bindings?limit=1000")
    grant = next(b for b in bindings["items"] if b["id"] == done["binding_id"])
    assert grant == {**grant, "policy": prod["policy"], "identity_id": asker["id"], "request_id": made["id"],
                     "expires_at": done["expires_at"]}

    # the requester keeps calling, on this replica and (on RabbitMQ) on the other one
    replicas = [api] + ([far] if far is not None else [])
    results = await asyncio.gather(*(refused_at(r, asker["token"], prod["path"], ends + 3) for r in replicas))
    for last_ok, refused in results:
        assert last_ok > 0, "the grant never reached this replica"
        assert last_ok < ends + 0.05, "allowed after expires_at"
        assert refused - ends < 1.0, f"refused {refused - ends:.2f} s after expires_at"

    status, now, _ = await api.request("GET", f"/v1/access-requests/{made['id']}", token=asker["token"])
    assert status == 200 and now["status"] == "expired"
    _, bindings, _ = await api.request("GET", "/v1/bindings?limit=1000")
    assert done["binding_id"] not in {b["id"] for b in bindings["items"]}
    status, body, headers = await api.request("GET", f"/v1/bindings/{done['binding_id']}")
    assert_envelope(status, body, headers, "binding_not_found")

    # on the event stream: asked, approved, ended (the sweeper's) — who, what, how long, never the value
    events = await events_of(hooked, made["id"], "access.requested", "access.approved", "access.expired")
    assert set(events) == {"access.requested", "access.approved", "access.expired"}
    for event in events.values():
        assert event["data"] | {"requester": asker["id"], "policy": prod["policy"], "duration": "3s"} \
            == event["data"]
        assert prod["value"] not in json.dumps(event)
    asked_event = events["access.requested"]["data"]
    assert asked_event["reason"] == "incident 42" and asked_event["approvers"] is None
    assert asked_event["requester_name"] == asker["name"]
    assert events["access.approved"]["data"]["approved_by"] == [boss["id"]]
    assert events["access.expired"]["data"]["cause"] == "ended"

    # and in the audit log: the request, the decision with its comment, the end
    _, log, _ = await api.request("GET", f"/v1/audit/events?path_prefix=access-requests/{made['id']}")
    entries = {e["action"]: e for e in log["items"]}
    assert entries["POST /v1/access-requests/{id}:{action} (approve)"]["fields"]["notes"] == {
        "policy": prod["policy"], "comment": "ok for the incident"}
    assert entries["POST /v1/access-requests/{id}:{action} (approve)"]["identity_id"] == boss["id"]
    assert "access request expired (grant ended)" in await audited(api, made["id"])
    _, created, _ = await api.request("GET", f"/v1/audit/events?path_prefix=access-requests/{made['id']}"
                                             f"&identity_id={asker['id']}")
    assert created["items"][0]["action"] == "POST /v1/access-requests"
    assert created["items"][0]["fields"]["notes"] == {"policy": prod["policy"], "reason": "incident 42"}


async def test_two_distinct_approvals_and_never_ones_own(api: Api, prod: dict[str, Any],
                                                         hooked: dict[str, Any]) -> None:
    policy = await requestable(api, [f"secrets/{prod['base']}/prod/**"], approvals=2)
    first, second = await approver(api, [policy]), await approver(api, [policy])
    # someone who may approve the policy still can't approve its own request
    own = await asked(api, first["token"], policy)
    for action in ("approve", "deny"):
        status, body, headers = await act(api, first["token"], own["id"], action)
        assert assert_envelope(status, body, headers, "forbidden")["details"] == {"rule": "self_approval"}
    status, body, headers = await act(api, first["token"], own["id"], "revoke")  # its own: it cancels instead
    err = assert_envelope(status, body, headers, "forbidden")
    assert err["details"] == {"rule": "self_approval"} and "cancel it instead" in err["message"]
    await acted(api, first["token"], own["id"], "cancel")

    made = await asked(api, prod["requester"]["token"], policy)
    assert made["approvals_required"] == 2
    half = await acted(api, first["token"], made["id"], "approve", "one")
    assert half["status"] == "pending" and len(half["approvals"]) == 1 and half["binding_id"] is None
    status, body, headers = await act(api, first["token"], made["id"], "approve", "again")
    assert assert_envelope(status, body, headers, "forbidden")["details"] == {"rule": "distinct_approvers"}
    done = await acted(api, second["token"], made["id"], "approve", "two")
    assert done["status"] == "approved" and [a["identity_id"] for a in done["approvals"]] == [first["id"],
                                                                                              second["id"]]
    # a decided request takes no more decisions
    for actor, action in ((second, "approve"), (first, "deny")):
        status, body, headers = await act(api, actor["token"], made["id"], action)
        assert assert_envelope(status, body, headers, "version_conflict")["details"] == {
            "status": "approved", "id": made["id"]}
    approved = (await events_of(hooked, made["id"], "access.approved"))["access.approved"]["data"]
    assert approved["approved_by"] == [first["id"], second["id"]] and approved["comment"] == "two"
    await acted(api, prod["requester"]["token"], made["id"], "cancel")


async def test_deny_cancel_and_revoke_each_end_it(api: Api, prod: dict[str, Any], hooked: dict[str, Any]) -> None:
    asker, boss, path = prod["requester"], prod["approver"], f"/v1/secrets/{prod['path']}"

    async def reads() -> int:
        return (await api.request("GET", path, token=asker["token"]))[0]

    denied = await asked(api, asker["token"], prod["policy"])
    status, body, headers = await act(api, asker["token"], denied["id"], "deny")  # a secrets:read token
    assert assert_envelope(status, body, headers, "insufficient_scope")["details"] == {"required_scope": "admin"}
    done = await acted(api, boss["token"], denied["id"], "deny", "not during the freeze")
    assert (done["status"], done["comment"], done["decided_by"]) == ("denied", "not during the freeze", boss["id"])
    status, body, headers = await act(api, asker["token"], denied["id"], "cancel")
    assert assert_envelope(status, body, headers, "version_conflict")["details"]["status"] == "denied"
    event = (await events_of(hooked, denied["id"], "access.denied"))["access.denied"]
    assert event["data"]["denied_by"] == boss["id"] and event["data"]["comment"] == "not during the freeze"

    pending = await asked(api, asker["token"], prod["policy"])
    status, body, headers = await act(api, boss["token"], pending["id"], "cancel")
    assert assert_envelope(status, body, headers, "forbidden")["details"] == {"rule": "requester_only"}
    status, body, headers = await act(api, boss["token"], pending["id"], "revoke")  # nothing granted yet
    assert assert_envelope(status, body, headers, "version_conflict")["details"]["status"] == "pending"
    assert (await acted(api, asker["token"], pending["id"], "cancel"))["status"] == "cancelled"

    revoked = await asked(api, asker["token"], prod["policy"])
    await acted(api, boss["token"], revoked["id"], "approve")
    assert await reads() == 200
    done = await acted(api, boss["token"], revoked["id"], "revoke", "incident closed")
    assert done["status"] == "revoked" and done["comment"] == "incident closed"
    assert await reads() == 403
    assert (await events_of(hooked, revoked["id"], "access.revoked"))["access.revoked"]["data"]["by"] == boss["id"]

    cancelled = await asked(api, asker["token"], prod["policy"])
    await acted(api, boss["token"], cancelled["id"], "approve")
    assert await reads() == 200
    assert (await acted(api, asker["token"], cancelled["id"], "cancel", "done early"))["status"] == "cancelled"
    assert await reads() == 403

    # a grant's binding deleted by someone who manages the policy: the request reads revoked
    unbound = await asked(api, asker["token"], prod["policy"])
    granted = await acted(api, boss["token"], unbound["id"], "approve")
    assert (await api.request("DELETE", f"/v1/bindings/{granted['binding_id']}"))[0] == 204
    assert await reads() == 403
    status, now, _ = await api.request("GET", f"/v1/access-requests/{unbound['id']}", token=asker["token"])
    assert now["status"] == "revoked"


async def test_a_request_nobody_answers_expires(api: Api, platform: Platform, pg_dsn: str, prod: dict[str, Any],
                                               hooked: dict[str, Any]) -> None:
    """COFFER_ACCESS_REQUEST_TTL (24h) after it was made, a pending request is expired: the day is skipped
    by moving its ``pending_until`` back in the database."""
    made = await asked(api, prod["requester"]["token"], prod["policy"])
    assert moment(made["pending_until"]) - moment(made["created_at"]) == pytest.approx(86400, abs=0.01)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(f'UPDATE "{platform.settings.schema_for("gateway")}".access_requests'
                           " SET pending_until = now() WHERE id = $1", made["id"])
    finally:
        await conn.close()
    status, now, _ = await api.request("GET", f"/v1/access-requests/{made['id']}", token=prod["requester"]["token"])
    assert status == 200 and now["status"] == "expired"  # at once, before the sweeper writes it
    status, body, headers = await act(api, prod["approver"]["token"], made["id"], "approve")
    assert assert_envelope(status, body, headers, "version_conflict")["details"]["status"] == "expired"
    event = (await events_of(hooked, made["id"], "access.expired"))["access.expired"]
    assert event["data"]["cause"] == "unanswered" and event["data"]["status"] == "expired"
    assert "access request expired (unanswered)" in await audited(api, made["id"])


async def test_only_requestable_policies_for_at_most_their_duration(api: Api, prod: dict[str, Any]) -> None:
    asker = prod["requester"]
    status, plain, _ = await api.request("POST", "/v1/policies", json={
        "name": unique("plain-"), "rules": [allow(["secrets/**"], ["read"])]})
    assert status == 201 and plain["request"] is None
    for policy in (plain["name"], "no-such-policy"):  # the same answer whether it exists or not
        status, body, headers = await ask(api, asker["token"], policy)
        assert assert_envelope(status, body, headers, "forbidden")["details"] == {"rule": "not_requestable"}
    status, body, headers = await ask(api, asker["token"], prod["policy"], "2h")
    assert assert_envelope(status, body, headers, "ttl_exceeds_max")["details"] == {"max_duration": "1h"}
    for bad in ("0s", "soon", "1h-"):
        status, body, headers = await ask(api, asker["token"], prod["policy"], bad)
        assert_envelope(status, body, headers, "invalid_duration")
    first = await asked(api, asker["token"], prod["policy"], "1h")
    status, body, headers = await ask(api, asker["token"], prod["policy"], "30m")
    assert assert_envelope(status, body, headers, "version_conflict")["details"] == {
        "status": "pending", "id": first["id"]}
    await acted(api, asker["token"], first["id"], "cancel")
    # an unknown id, here and for every action
    for method, path in (("GET", "/v1/access-requests/acr_0123456789abcdef0123"),
                         ("POST", "/v1/access-requests/acr_0123456789abcdef0123:approve")):
        status, body, headers = await api.request(method, path, json={})
        assert_envelope(status, body, headers, "binding_not_found")


async def test_another_tenant_sees_nothing_and_a_partner_admin_needs_approve_there(
        api: Api, prod: dict[str, Any]) -> None:
    made = await asked(api, prod["requester"]["token"], prod["policy"])
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": unique("child-")})
    assert status == 201, child
    there = {"X-Tenant-ID": child["id"]}
    stranger = await identity(api, ["admin", "secrets:read"], [allow(["**"], ["read", "list", "approve", "manage"])],
                              tenant=child["id"])
    for method, path in (("GET", f"/v1/access-requests/{made['id']}"),
                         ("POST", f"/v1/access-requests/{made['id']}:approve"),
                         ("POST", f"/v1/access-requests/{made['id']}:cancel")):
        status, body, headers = await api.request(method, path, token=stranger["token"], json={})
        assert_envelope(status, body, headers, "binding_not_found")  # as if it did not exist
    status, listed, _ = await api.request("GET", "/v1/access-requests", token=stranger["token"])
    assert status == 200 and listed["items"] == []

    # in the child: its own requestable policy and requester; partner admins above decide only with approve
    policy = await requestable(api, ["secrets/child/**"], headers=there)
    local = await identity(api, ["secrets:read"], tenant=child["id"])
    asked_there = await asked(api, local["token"], policy)
    narrow = await identity(api, ["admin", "secrets:read"], [allow(["**"], ["read", "list"])], partner_admin=True)
    status, body, headers = await act(api, narrow["token"], asked_there["id"], "approve", headers=there)
    assert_envelope(status, body, headers, "access_denied")
    status, body, headers = await ask(api, narrow["token"], policy, headers=there)  # asked in one's own tenant
    assert assert_envelope(status, body, headers, "forbidden")["details"] == {"rule": "own_tenant"}
    status, body, _ = await act(api, api.token or "", asked_there["id"], "approve", "partner ok", headers=there)
    assert status == 200 and body["status"] == "approved", body
    # the root tenant's list does not hold the child's request
    _, mine, _ = await api.request("GET", "/v1/access-requests?limit=1000")
    assert asked_there["id"] not in {r["id"] for r in mine["items"]} and made["id"] in {r["id"] for r in mine["items"]}
    await acted(api, prod["requester"]["token"], made["id"], "cancel")


async def test_a_helpdesk_that_approves_one_policy_can_do_nothing_more(api: Api, prod: dict[str, Any]) -> None:
    helpdesk = await identity(api, ["admin", "secrets:read"], [allow([f"policies/{prod['policy']}"], ["approve"])])
    other = await requestable(api, ["secrets/other/**"])
    theirs = await asked(api, prod["requester"]["token"], other)
    for method, path in (("GET", f"/v1/access-requests/{theirs['id']}"),
                         ("POST", f"/v1/access-requests/{theirs['id']}:approve")):
        status, body, headers = await api.request(method, path, token=helpdesk["token"], json={})
        assert_envelope(status, body, headers, "binding_not_found")  # not its policy: not even seen
    _, listed, _ = await api.request("GET", "/v1/access-requests?limit=1000", token=helpdesk["token"])
    assert {r["policy"] for r in listed["items"]} <= {prod["policy"]}
    # it can't make a policy requestable, make one, or bind one
    escalations = (("PUT", f"/v1/policies/{prod['policy']}", {"rules": [allow(["**"], ["read"])],
                                                              "request": {"max_duration": "30d"}}),
                   ("POST", "/v1/policies", {"name": unique("mine-"), "rules": [allow(["**"], ["read"])],
                                             "request": {"max_duration": "1h"}}),
                   ("POST", "/v1/bindings", {"policy": prod["policy"], "identity_id": helpdesk["id"]}))
    for method, path, payload in escalations:
        status, body, headers = await api.request(method, path, token=helpdesk["token"], json=payload)
        assert_envelope(status, body, headers, "access_denied")
    # a token of it narrowed to secrets:read decides nothing, even on its own policy
    theirs_too = await asked(api, prod["requester"]["token"], prod["policy"])
    narrow = await token(api, helpdesk["client_id"], helpdesk["client_secret"], scopes=["secrets:read"])
    status, body, headers = await act(api, narrow, theirs_too["id"], "approve")
    assert assert_envelope(status, body, headers, "insufficient_scope")["details"] == {"required_scope": "admin"}
    await acted(api, prod["requester"]["token"], theirs_too["id"], "cancel")
    # nor give itself the policy it approves: asking is allowed, approving its own is not
    own = await asked(api, helpdesk["token"], prod["policy"])
    status, body, headers = await act(api, helpdesk["token"], own["id"], "approve")
    assert_envelope(status, body, headers, "forbidden")
    await acted(api, helpdesk["token"], own["id"], "cancel")
    await acted(api, prod["requester"]["token"], theirs["id"], "cancel")


async def test_a_filtered_list_tells_nothing_of_requests_the_caller_cant_see(api: Api, prod: dict[str, Any]) -> None:
    """Who asked for which policy is not the caller's to learn: a filter over hidden requests answers an empty
    page with no cursor, exactly as a filter over none (the cursor was cut before the rows were judged)."""
    hidden = [await asked(api, prod["requester"]["token"], await requestable(api, [f"secrets/{unique('h')}/**"]))
              for _ in range(3)]
    stranger = await identity(api, ["secrets:read"])
    for filters in (f"requester={prod['requester']['id']}", "status=pending", f"requester={stranger['id']}"):
        status, page, _ = await api.request("GET", f"/v1/access-requests?{filters}&limit=1", token=stranger["token"])
        assert status == 200 and page == {"items": [], "next_cursor": None}, (filters, page)
    # the requester pages through its own: a cursor while more of them follow
    status, page, _ = await api.request("GET", f"/v1/access-requests?requester={prod['requester']['id']}&limit=1",
                                        token=prod["requester"]["token"])
    assert status == 200 and len(page["items"]) == 1 and page["next_cursor"] is not None
    for each in hidden:
        await acted(api, prod["requester"]["token"], each["id"], "cancel")


async def test_approvers_named_by_id_or_by_policy(api: Api, prod: dict[str, Any]) -> None:
    oncall = unique("oncall-")
    assert (await api.request("POST", "/v1/policies", json={"name": oncall, "rules": [
        allow(["secrets/none"], ["read"])]}))[0] == 201
    named, member = await identity(api, ["admin"]), await identity(api, ["admin"])
    assert (await api.request("POST", "/v1/bindings", json={"policy": oncall, "identity_id": member["id"]}))[0] == 201
    policy = await requestable(api, ["secrets/leads/**"], approvers=[named["id"], f"policy:{oncall}"])
    # all three may approve the policy; only those its approvers name do
    grant = [allow([f"policies/{policy}"], ["approve"])]
    helper = await identity(api, ["admin"], grant)
    boss_policy = unique("boss-")
    assert (await api.request("POST", "/v1/policies", json={"name": boss_policy, "rules": grant}))[0] == 201
    for who in (named, member):
        assert (await api.request("POST", "/v1/bindings", json={"policy": boss_policy,
                                                               "identity_id": who["id"]}))[0] == 201
    for decider in (named, member):
        made = await asked(api, prod["requester"]["token"], policy)
        status, body, headers = await act(api, helper["token"], made["id"], "approve")
        assert assert_envelope(status, body, headers, "forbidden")["details"] == {"rule": "approvers"}
        assert (await acted(api, decider["token"], made["id"], "approve"))["status"] == "approved"
        await acted(api, prod["requester"]["token"], made["id"], "cancel")
    status, body, headers = await api.request("POST", "/v1/policies", json={
        "name": unique("few-"), "rules": grant, "request": {"max_duration": "1h", "approvals": 2,
                                                            "approvers": [named["id"]]}})
    assert_envelope(status, body, headers, "validation_error")  # one named approver can't make two approvals


async def test_bad_input_is_refused_with_its_code_and_nothing_is_stored(api: Api, prod: dict[str, Any]) -> None:
    asker, boss = prod["requester"], prod["approver"]

    async def count() -> int:
        _, page, _ = await api.request("GET", f"/v1/access-requests?requester={asker['id']}&limit=1000")
        return len(page["items"])

    before = await count()
    good = {"policy": prod["policy"], "duration": "1h", "reason": "why"}
    wrong = [{**good, "reason": "r" * 1001}, {**good, "reason": ""}, {**good, "reason": 5}, {**good, "reason": None},
             {**good, "duration": 3600}, {**good, "duration": "1h" * 30}, {**good, "policy": "../x"},
             {**good, "policy": ["a"]}, {k: v for k, v in good.items() if k != "reason"}, {**good, "extra": 1},
             {**good, "reason": "nul\x00byte"}]
    for body in wrong:
        status, answer, headers = await api.request("POST", "/v1/access-requests", token=asker["token"], json=body)
        assert_envelope(status, answer, headers, "validation_error")
    for raw in (b"[1, 2]", b"not json", b'{"reason": "' + b"x" * (1024 * 1024) + b'"}'):
        status, answer, headers = await api.request("POST", "/v1/access-requests", token=asker["token"], data=raw,
                                                    headers={"Content-Type": "application/json"})
        assert_envelope(status, answer, headers, "invalid_request")
    assert await count() == before

    # a reason in any script, kept as written
    reason = "Ünïcødé 🔑 — 緊急対応 \u202e"
    status, made, _ = await api.request("POST", "/v1/access-requests", token=asker["token"],
                                        json={**good, "reason": reason})
    assert status == 201 and made["reason"] == reason
    for comment in ("c" * 1001, 7, ["x"]):
        status, answer, headers = await act(api, boss["token"], made["id"], "approve", comment)  # type: ignore[arg-type]
        assert_envelope(status, answer, headers, "validation_error")
    assert (await api.request("GET", f"/v1/access-requests/{made['id']}", token=asker["token"]))[1]["status"] \
        == "pending"
    await acted(api, asker["token"], made["id"], "cancel", "🔑 done")

    # hostile ids answer like unknown ones
    for hostile in ("%00", "..%2F..%2Fpolicies", "acr_" + "a" * 5000, "%F0%9F%94%91", "acr_1'%20OR%20'1'='1",
                    made["id"].upper()):
        for method, tail in (("GET", ""), ("POST", ":approve"), ("POST", ":revoke")):
            status, answer, headers = await api.request(method, f"/v1/access-requests/{hostile}{tail}",
                                                        token=boss["token"], json={})
            assert_envelope(status, answer, headers, "binding_not_found")
    for params in ("status=granted", "requester=" + "x" * 65, "policy=..", "limit=0"):
        status, answer, headers = await api.request("GET", f"/v1/access-requests?{params}", token=asker["token"])
        assert_envelope(status, answer, headers, "validation_error")


async def test_a_grant_survives_the_logins_of_an_external_identity(api: Api, prod: dict[str, Any]) -> None:
    """A jwt login settles the identity's bindings to its role's policies: grants are not the role's."""
    async for issuer in serve_issuer():
        await _logins_keep_the_grant(api, prod, issuer)


async def _logins_keep_the_grant(api: Api, prod: dict[str, Any], issuer: Issuer) -> None:
    iss, url = issuer.add()
    method = (await make_method(api, url))["name"]
    standing = await requestable(api, ["secrets/standing/**"])
    await put_role(api, method, "deploy", scopes=["secrets:read"], policies=[standing])

    async def logged_in() -> str:
        status, body, _ = await login(api, method, "deploy", issuer.mint(iss))
        assert status == 200, body
        return str(body["access_token"])

    token = await logged_in()
    _, me, _ = await api.request("GET", "/v1/auth/whoami", token=token)
    made = await asked(api, token, prod["policy"])
    granted = await acted(api, prod["approver"]["token"], made["id"], "approve")
    token = await logged_in()  # settled already: the quick way
    await put_role(api, method, "deploy", scopes=["secrets:read"], policies=[])
    token = await logged_in()  # the role changed: its bindings settled again, the grant kept
    status, body, _ = await api.request("GET", f"/v1/secrets/{prod['path']}", token=token)
    assert status == 200 and body["value"] == prod["value"]
    _, bindings, _ = await api.request("GET", "/v1/bindings?limit=1000")
    mine = [b for b in bindings["items"] if b["identity_id"] == me["identity"]["id"]]
    assert [(b["id"], b["request_id"]) for b in mine] == [(granted["binding_id"], made["id"])]  # the role's is gone
    await acted(api, token, made["id"], "cancel")


async def test_the_readmes_receiver_tells_a_chat_channel(api: Api, prod: dict[str, Any], tmp_path: Path,
                                                        http: aiohttp.ClientSession) -> None:
    """README.md's access.* receiver, as written, between this platform's webhook and a chat's."""
    chat, port = await Receiver().start(), free_port()
    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": f"http://127.0.0.1:{port}/coffer"})
    assert status == 201, hook
    assert (await api.request("POST", "/v1/subscriptions", json={"webhook_id": hook["id"],
                                                                 "event_types": ["access.*"]}))[0] == 201
    try:
        async with readme_receiver(tmp_path, port, chat.url, remember_secret(hook["secret"]), http):
            made = await asked(api, prod["requester"]["token"], prod["policy"])
            await acted(api, prod["approver"]["token"], made["id"], "approve")
            await wait_until(lambda: len(chat.requests) >= 2, timeout=15)
        said = sorted(json.loads(r.body)["text"] for r in chat.requests)
        who = prod["requester"]["name"]
        assert said == [f"{who} asks for {prod['policy']} for 1h: incident 42 (coffer access approve {made['id']})",
                        f"{who} now has {prod['policy']} for 1h"]
        await acted(api, prod["requester"]["token"], made["id"], "cancel")
    finally:
        await chat.stop()
