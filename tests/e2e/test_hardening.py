"""The security review's holes, each tried through the gateway as an attacker would (issue #11).

Every test here failed on the main of 2026-11-25 (before the fixes); each
names the rule of ../shared/docs/api.md it proves.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from services.gateway.http import ROUTES
from services.platform import Platform
from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_gateway_envelope import assert_envelope

# -- §4: globs run in linear time --------------------------------------------------------

NOWHERE = "http://127.0.0.1:9999/h"  # an allowed port where nothing listens
EXPLOSIVE = "/".join(["**"] * 20 + ["nothing-matches-this"])  # hours for the old backtracking matcher


async def test_a_pathological_glob_does_not_stall_the_gateway(api: Api) -> None:
    """A tenant's policy and subscription with 20 '**' answer at once and don't hold up anyone else."""
    victim = await identity(api, ["secrets:read", "secrets:write", "webhooks"], [
        allow([EXPLOSIVE], ["read"]), allow(["secrets/hard/**", "webhooks", "webhooks/**"], ["read", "write"])])
    deep = "hard/" + "/".join(["s"] * 14)
    status, _, _ = await api.request("PUT", f"/v1/secrets/{deep}", json={"value": "v"}, token=victim["token"])
    assert status == 201

    started = time.monotonic()
    status, body, headers = await api.request("DELETE", f"/v1/secrets/{deep}", token=victim["token"])
    assert_envelope(status, body, headers, "access_denied")  # every rule was evaluated, none allowed it
    assert time.monotonic() - started < 2.0

    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": NOWHERE},
                                        token=victim["token"])
    assert status == 201
    status, sub, _ = await api.request("POST", "/v1/subscriptions", token=victim["token"], json={
        "webhook_id": hook["id"], "event_types": ["secret.*"], "path_pattern": "/".join(["**"] * 20 + ["x"])})
    assert status == 201, sub
    # events are matched against that pattern while everyone else keeps being answered
    writes = [api.request("PUT", f"/v1/secrets/{deep}-{i}", json={"value": "v"}, token=victim["token"])
              for i in range(5)]
    started = time.monotonic()
    results = await asyncio.gather(*writes, *(api.request("GET", "/v1/sys/health", token=None) for _ in range(5)))
    assert all(r[0] in (200, 201) for r in results)
    assert time.monotonic() - started < 3.0


async def test_a_glob_over_512_characters_is_refused(api: Api) -> None:
    status, body, headers = await api.request("POST", "/v1/policies", json={
        "name": name("p"), "rules": [allow(["a/" * 256 + "b"], ["read"])]})
    assert_envelope(status, body, headers, "invalid_glob")


# -- §1: no-store on every /v1 answer; Retry-After on every quota_exceeded -------------------

def _concrete(path: str) -> str:
    """A route template with its parameters filled in (``{tail:.+}`` included)."""
    return re.sub(r"\{[a-z_]+(?::[^}]*)?\}", "x", path).replace("(ping|rotate-secret)", "ping")


async def test_every_v1_route_answers_no_store(platform: Platform, api: Api) -> None:
    """Every route of the table, success or failure, with or without a token: ``Cache-Control: no-store``."""
    assert platform.app is not None
    routes = {(r.method, r.path) for r in platform.app[ROUTES].values() if r.path.startswith("/v1/")}
    assert len(routes) > 40
    missing = []
    for method, path in sorted(routes):
        for token in ("default", None):
            status, _, headers = await api.request(method, _concrete(path), token=token, json={})
            if headers.get("Cache-Control") != "no-store":
                missing.append((method, path, status))
    status, _, headers = await api.request("GET", "/v1/no-such-route")
    assert headers.get("Cache-Control") == "no-store"
    assert not missing, missing


async def test_secret_carrying_answers_are_not_stored(api: Api, admin: dict[str, Any]) -> None:
    """The answers that hold a secret value, a token, a client secret or a signing secret."""
    path = f"nostore/{name()}"
    value = remember_secret(f"v-{name()}")
    calls: list[tuple[str, str, dict[str, Any] | None, str | None]] = [
        ("PUT", f"/v1/secrets/{path}", {"value": value}, "default"),
        ("GET", f"/v1/secrets/{path}", None, "default"),
        ("POST", "/v1/auth/token", {"client_id": admin["client_id"], "client_secret": admin["client_secret"]}, None),
        ("POST", "/v1/identities", {"name": name(), "kind": "service", "allowed_scopes": []}, "default"),
        ("POST", "/v1/webhooks", {"url": NOWHERE}, "default"),
    ]
    for method, url, body, token in calls:
        status, answer, headers = await api.request(method, url, json=body, token=token)
        assert status in (200, 201), (url, answer)
        assert headers["Cache-Control"] == "no-store", url
        for key in ("client_secret", "secret", "access_token"):
            if isinstance(answer, dict) and key in answer:
                remember_secret(answer[key])


async def test_quota_exceeded_raised_inside_a_service_carries_retry_after(api: Api) -> None:
    """max_secrets (checked by the secrets service) and max_webhooks (the webhooks service)."""
    status, child, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    assert status == 201
    tenant = {"X-Tenant-ID": child["id"]}
    await api.request("PATCH", f"/v1/tenants/{child['id']}", json={"quotas": {"max_secrets": 1, "max_webhooks": 0}})
    status, _, _ = await api.request("PUT", "/v1/secrets/q/one", json={"value": "v"}, headers=tenant)
    assert status == 201
    for method, url, body in (("PUT", "/v1/secrets/q/two", {"value": "v"}),
                              ("POST", "/v1/webhooks", {"url": NOWHERE})):
        status, answer, headers = await api.request(method, url, json=body, headers=tenant)
        assert_envelope(status, answer, headers, "quota_exceeded")
        assert headers["Retry-After"].isdigit() and int(headers["Retry-After"]) > 0


# -- §5.5: one outbound guard -----------------------------------------------------------------

async def test_outbound_guard_refuses_privileged_ports_and_site_local_addresses(api: Api) -> None:
    """Allow-listing 127.0.0.0/8 (as the tests do) widens addresses, never ports; fec0::/10 is not public."""
    for url in ("http://127.0.0.1:22/h", "http://127.0.0.1:25/h", "http://127.0.0.1:1023/h", "https://[fec0::1]/h",
                "https://[fec0::1]:8443/h"):
        status, body, headers = await api.request("POST", "/v1/webhooks", json={"url": url})
        err = assert_envelope(status, body, headers, "webhook_url_invalid")
        assert err["details"]["reason"], url
    status, hook, _ = await api.request("POST", "/v1/webhooks", json={"url": "http://127.0.0.1:1024/h"})
    assert status == 201, hook
    remember_secret(hook["secret"])
    status, body, headers = await api.request("PATCH", f"/v1/webhooks/{hook['id']}", json={"url": "http://127.0.0.1:22/"})
    assert_envelope(status, body, headers, "webhook_url_invalid")
