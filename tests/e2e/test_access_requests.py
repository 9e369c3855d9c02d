"""Access requests through the gateway (api.md §14, issue #32): ask for a requestable policy, a colleague
approves, the grant ends by itself — on every replica at the same moment.

The module runs twice, on a platform of its own each time: embedded and on RabbitMQ, where a second
gateway process checks that both replicas refuse the requester within a second of ``expires_at``. A
webhook receiver of the module's hears every ``access.*`` event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from standardwebhooks import Webhook

from services.platform import Platform
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.access_helpers import (
    act,
    acted,
    approver,
    ask,
    asked,
    moment,
    refused_at,
    requestable,
)
from tests.e2e.iam_helpers import allow, identity
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


async def events_of(hooked: dict[str, Any], request_id: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` ``access.*`` events about ``request_id`` the receiver got, signatures checked."""
    def found() -> list[dict[str, Any]]:
        events = [Webhook(hooked["secret"]).verify(r.body, r.headers) for r in hooked["receiver"].requests]
        return [e for e in events if e["data"].get("id") == request_id]
    await wait_until(lambda: len(found()) >= count, timeout=15)
    return found()


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
    events = await events_of(hooked, made["id"], 3)
    assert [e["type"] for e in events] == ["access.requested", "access.approved", "access.expired"]
    for event in events:
        assert event["data"] | {"requester": asker["id"], "policy": prod["policy"], "duration": "3s"} \
            == event["data"]
        assert prod["value"] not in json.dumps(event)
    assert events[0]["data"]["reason"] == "incident 42" and events[0]["data"]["approvers"] is None
    assert events[1]["data"]["approved_by"] == [boss["id"]] and events[2]["data"]["cause"] == "ended"
    assert events[0]["data"]["requester_name"] == asker["name"]

    # and in the audit log: the request, the decision with its comment, the end
    _, log, _ = await api.request("GET", f"/v1/audit/events?path_prefix=access-requests/{made['id']}")
    entries = {e["action"]: e for e in log["items"]}
    assert entries["POST /v1/access-requests/{id}:{action} (approve)"]["fields"]["notes"] == {
        "policy": prod["policy"], "comment": "ok for the incident"}
    assert entries["POST /v1/access-requests/{id}:{action} (approve)"]["identity_id"] == boss["id"]
    assert "access request expired (grant ended)" in entries
    _, created, _ = await api.request("GET", f"/v1/audit/events?path_prefix=access-requests/{made['id']}"
                                             f"&identity_id={asker['id']}")
    assert created["items"][0]["action"] == "POST /v1/access-requests"
    assert created["items"][0]["fields"]["notes"] == {"policy": prod["policy"], "reason": "incident 42"}
