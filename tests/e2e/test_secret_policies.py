"""Secret policies (api.md §5.1) through the gateway: their CRUD and codes, and every write to a matching
path held to their rules — creates and updates, atomically with the write, never echoing the value."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_gateway_envelope import assert_envelope


async def expect(api: Api, code: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, body, headers = await api.request(method, path, **kwargs)
    return assert_envelope(status, body, headers, code)


async def policy(api: Api, **body: Any) -> dict[str, Any]:
    status, made, _ = await api.request("POST", "/v1/secret-policies", json={"name": name("sp"), **body})
    assert status == 201, made
    return dict(made)


async def test_secret_policy_crud_and_codes(api: Api) -> None:
    base = name("sp")
    made = await policy(api, path_pattern=f"{base}/**", allowed_types=["password"], max_ttl="30d")
    assert made["require_expiry"] is False and made["min_length"] is None
    path = f"/v1/secret-policies/{made['name']}"
    status, got, _ = await api.request("GET", path)
    assert status == 200 and got == made
    status, listed, _ = await api.request("GET", "/v1/secret-policies?limit=1000")
    assert status == 200 and made["name"] in [p["name"] for p in listed["items"]]
    status, replaced, _ = await api.request("PUT", path, json={"path_pattern": f"{base}/**", "min_length": 20})
    assert status == 200 and replaced["min_length"] == 20 and replaced["allowed_types"] is None
    await expect(api, "name_conflict", "POST", "/v1/secret-policies", json={"name": made["name"],
                                                                          "path_pattern": "x/**"})
    await expect(api, "invalid_glob", "POST", "/v1/secret-policies", json={"name": name("sp"), "path_pattern": "a//b"})
    await expect(api, "invalid_duration", "POST", "/v1/secret-policies",
                 json={"name": name("sp"), "path_pattern": "a/**", "max_ttl": "forever"})
    await expect(api, "invalid_secret_type", "POST", "/v1/secret-policies",
                 json={"name": name("sp"), "path_pattern": "a/**", "allowed_types": ["diary"]})
    for body in ({"name": "UPPER", "path_pattern": "a"}, {"name": "ключ", "path_pattern": "a"},
                 {"name": name("sp")}, {"name": name("sp"), "path_pattern": "a", "min_length": 0},
                 {"name": name("sp"), "path_pattern": "a", "require_expiry": "yes"}):
        await expect(api, "validation_error", "POST", "/v1/secret-policies", json=body)
    await expect(api, "invalid_request", "POST", "/v1/secret-policies", data=b'{"name": "' + b"a" * 2_000_000 + b'"}')
    assert (await api.request("DELETE", path))[0] == 204
    await expect(api, "secret_policy_not_found", "GET", path)
    await expect(api, "secret_policy_not_found", "DELETE", path)


async def test_every_write_to_a_matching_path_keeps_every_rule(api: Api) -> None:
    base = name("rules")
    made = await policy(api, path_pattern=f"{base}/prod/**", allowed_types=["password", "api_key"],
                        require_expiry=True, max_ttl="1h", min_length=12)
    good = remember_secret("correct-horse-battery-" + base)
    secret = f"/v1/secrets/{base}/prod/db"
    for body, rule in (
            ({"value": good, "secret_type": "generic", "ttl": "30m"}, "allowed_types"),
            ({"value": good, "secret_type": "password"}, "require_expiry"),
            ({"value": good, "secret_type": "password", "ttl": "2h"}, "max_ttl"),
            ({"value": remember_secret("short-" + base[-4:]), "secret_type": "password", "ttl": "30m"},
             "min_length")):
        err = await expect(api, "validation_error", "PUT", secret, json=body)
        assert err["details"]["policy"] == made["name"] and err["details"]["rule"] == rule
        assert body["value"] not in repr(err)  # the value is never echoed
    await expect(api, "secret_not_found", "GET", secret)  # nothing was written
    status, written, _ = await api.request("PUT", secret, json={"value": good, "secret_type": "password",
                                                                "ttl": "30m"})
    assert status == 201, written
    # updates are held to the rules too, and other paths are not
    err = await expect(api, "validation_error", "PUT", secret, json={"value": good, "secret_type": "password"})
    assert err["details"]["rule"] == "require_expiry"
    assert (await api.request("PUT", f"/v1/secrets/{base}/dev/db", json={"value": "x"}))[0] == 201
    status, current, _ = await api.request("GET", secret)
    assert status == 200 and current["version"] == 1
    # once the policy is gone, so are its rules
    assert (await api.request("DELETE", f"/v1/secret-policies/{made['name']}"))[0] == 204
    assert (await api.request("PUT", secret, json={"value": "x"}))[0] == 200


async def test_a_policy_applies_to_every_write_once_its_create_returned(api: Api) -> None:
    base = name("race")
    writes = [api.request("PUT", f"/v1/secrets/{base}/k{i}", json={"value": "no-expiry"}) for i in range(20)]
    create = api.request("POST", "/v1/secret-policies", json={"name": name("sp"), "path_pattern": f"{base}/**",
                                                              "require_expiry": True})
    results = await asyncio.gather(create, *writes)
    assert results[0][0] == 201
    assert {r[0] for r in results[1:]} <= {201, 422}  # each write before or after the policy, never broken
    after = await asyncio.gather(*(api.request("PUT", f"/v1/secrets/{base}/k{i}", json={"value": "v"})
                                   for i in range(20)))
    assert all(r[0] == 422 and r[1]["error"]["details"]["rule"] == "require_expiry" for r in after)


async def test_policies_are_the_tenants_own_and_need_the_admin_scope(api: Api) -> None:
    base = name("ten")
    made = await policy(api, path_pattern=f"{base}/**", require_expiry=True)
    status, other, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    stranger = await identity(api, ["secrets:read", "secrets:write", "admin"],
                              [allow(["**"], ["read", "list", "write", "manage"])], tenant=other["id"])
    await expect(api, "secret_policy_not_found", "GET", f"/v1/secret-policies/{made['name']}",
                 token=stranger["token"])
    status, listed, _ = await api.request("GET", "/v1/secret-policies", token=stranger["token"])
    assert status == 200 and listed["items"] == []
    # its writes are not held to another tenant's rules
    assert (await api.request("PUT", f"/v1/secrets/{base}/k", token=stranger["token"],
                              json={"value": "v"}))[0] == 201
    writer = await identity(api, ["secrets:read", "secrets:write"], [allow(["**"], ["read", "list", "write"])])
    await expect(api, "insufficient_scope", "GET", "/v1/secret-policies", token=writer["token"])
    await expect(api, "insufficient_scope", "DELETE", f"/v1/secret-policies/{made['name']}", token=writer["token"])
    helpdesk = await identity(api, ["admin"], [allow(["secret-policies/other"], ["read"])])
    await expect(api, "access_denied", "DELETE", f"/v1/secret-policies/{made['name']}", token=helpdesk["token"])
    assert (await api.request("DELETE", f"/v1/secret-policies/{made['name']}"))[0] == 204
