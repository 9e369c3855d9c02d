# ruff: noqa: F811  (pytest fixtures imported from test_acme are parameters here)
"""The ACME client's codes and bad input through the gateway, in both run modes (exact status and envelope),
its access rules (another tenant, a narrow policy, a token without the scope), and the CA's trouble: a rate
limit, stale nonces, a CA that is not there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.pki.acme.protocol import NONCE_RETRIES
from services.platform import Platform
from tests.conftest import Api, free_port, remember_secret
from tests.e2e.acme_peers import CaFront, Peers
from tests.e2e.iam_helpers import allow, identity, name

# the same peers and platforms as test_acme's, this module's own instances
from tests.e2e.test_acme import account, api, peers, platform, provider, settled  # noqa: F401
from tests.e2e.test_gateway_envelope import assert_envelope


@pytest.fixture(scope="module")
async def front(peers: Peers) -> AsyncIterator[CaFront]:
    async with CaFront(peers) as f:
        yield f


async def expect(api: Api, code: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
    status, body, headers = await api.request(method, path, **kw)
    return assert_envelope(status, body, headers, code)


async def count(api: Api, what: str) -> int:
    status, page, _ = await api.request("GET", f"/v1/pki/acme/{what}?limit=1000")
    assert status == 200, page
    return len(page["items"])


async def test_accounts_codes_and_bad_input(api: Api, peers: Peers) -> None:
    base = {"directory_url": peers.directory_url, "ca_bundle": peers.tls_root}
    before = await count(api, "accounts")
    for body in ({}, {"directory_url": 7}, {**base, "email": "not-an-email"}, {**base, "eab": {"kid": "k"}},
                 {**base, "eab": {"kid": "k", "hmac_key": "not base64url!"}}, {**base, "ca_bundle": "nope"},
                 {**base, "unknown": 1}, {**base, "email": ["a@b.c"]}):
        await expect(api, "validation_error", "POST", "/v1/pki/acme/accounts", json=body)
    await expect(api, "invalid_request", "POST", "/v1/pki/acme/accounts", json=[base])
    for url in ("ftp://127.0.0.1/dir", "https://10.0.0.1/dir", "https://127.0.0.1:22/dir", "https://user:pw@x/dir",
                "not a url", "https://bücher.invalid/dir"):
        err = await expect(api, "invalid_config", "POST", "/v1/pki/acme/accounts", json={**base, "directory_url": url})
        assert err["details"]["field"] == "directory_url"
    # nothing listens there / it is not a CA / its TLS certificate is not trusted
    await expect(api, "backend_error", "POST", "/v1/pki/acme/accounts",
                 json={**base, "directory_url": f"https://127.0.0.1:{free_port()}/dir"})
    await expect(api, "backend_error", "POST", "/v1/pki/acme/accounts",
                 json={**base, "directory_url": peers.directory_url.replace("/dir", "/nonce-plz")})
    await expect(api, "backend_error", "POST", "/v1/pki/acme/accounts",
                 json={"directory_url": peers.directory_url})
    # a wrong EAB MAC key: the CA refuses the binding
    err = await expect(api, "invalid_config", "POST", "/v1/pki/acme/accounts",
                       json={**base, "eab": {"kid": peers.eab_kid, "hmac_key": "AAAA" * 8}})
    assert err["details"]["problem"]["type"].startswith("urn:ietf:params:acme:error:")
    assert await count(api, "accounts") == before
    # a right one: the account is bound
    made = await account(api, peers, eab={"kid": peers.eab_kid, "hmac_key": peers.eab_hmac})
    assert made["eab_kid"] == peers.eab_kid and "hmac_key" not in str(made)
    status, got, _ = await api.request("GET", f"/v1/pki/acme/accounts/{made['id']}")
    assert status == 200 and got == made
    for bad in ("acct_" + "0" * 24, "acct_..%2F..%2Fx", "ca_x", "%E2%80%AE" * 30):
        await expect(api, "acme_account_not_found", "GET", f"/v1/pki/acme/accounts/{bad}")
    assert (await api.request("DELETE", f"/v1/pki/acme/accounts/{made['id']}"))[0] == 204
    await expect(api, "acme_account_not_found", "DELETE", f"/v1/pki/acme/accounts/{made['id']}")


async def test_dns_providers_codes_and_bad_input(api: Api, peers: Peers) -> None:
    good = peers.provider(name("dns"))
    before = await count(api, "dns-providers")
    for config in ({**good["config"], "tsig_secret": "not base64!"},  # type: ignore[dict-item]
                   {**good["config"], "tsig_secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},  # BADSIG
                   {**good["config"], "tsig_key_name": "nobody"},  # BADKEY
                   {**good["config"], "zone": "other.test"},  # not served there
                   {**good["config"], "nameserver": "10.0.0.1:53"}, {**good["config"], "nameserver": "127.0.0.1:22"},
                   {**good["config"], "nameserver": "127.0.0.1:99999"}, {"zone": "acme.test"},
                   {**good["config"], "tsig_algorithm": "md5"}):
        err = await expect(api, "invalid_config", "POST", "/v1/pki/acme/dns-providers", json={**good, "config": config})
        assert good["config"]["tsig_secret"] not in str(err)  # type: ignore[index]
    for body in ({**good, "type": "route53"}, {**good, "name": "../x"}, {**good, "config": "x"}, {"name": "n"},
                 {**good, "name": "Ключ"}):
        await expect(api, "validation_error", "POST", "/v1/pki/acme/dns-providers", json=body)
    assert await count(api, "dns-providers") == before
    made = await provider(api, peers, good["name"])  # type: ignore[arg-type]
    assert made["config"] == {k: v for k, v in good["config"].items() if k != "tsig_secret"}  # type: ignore[union-attr]
    await expect(api, "name_conflict", "POST", "/v1/pki/acme/dns-providers", json=good)
    await expect(api, "dns_provider_not_found", "GET", "/v1/pki/acme/dns-providers/dnsp_" + "0" * 24)
    # in use by an order: kept; then deleted with the order
    acct = await account(api, peers)
    status, order, _ = await api.request("POST", "/v1/pki/acme/orders", json={
        "account_id": acct["id"], "dns_provider_id": made["id"], "domains": ["keep.acme.test"]})
    assert status == 202, order
    await expect(api, "invalid_request", "DELETE", f"/v1/pki/acme/dns-providers/{made['id']}")
    await expect(api, "invalid_request", "DELETE", f"/v1/pki/acme/accounts/{acct['id']}")
    await settled(api, order["id"])
    assert (await api.request("DELETE", f"/v1/pki/acme/orders/{order['id']}"))[0] == 204
    await expect(api, "acme_order_not_found", "GET", f"/v1/pki/acme/orders/{order['id']}")
    assert (await api.request("DELETE", f"/v1/pki/acme/dns-providers/{made['id']}"))[0] == 204
    await expect(api, "dns_provider_not_found", "DELETE", f"/v1/pki/acme/dns-providers/{made['id']}")


async def test_orders_codes_and_bad_input(api: Api, peers: Peers) -> None:
    acct = await account(api, peers)
    dns = await provider(api, peers, name("dns"))
    base = {"account_id": acct["id"], "dns_provider_id": dns["id"]}
    before = await count(api, "orders")
    for domains in ([], ["127.0.0.1"], ["localhost"], ["a..acme.test"], ["*.*.acme.test"], ["x" * 300 + ".test"],
                    [f"n{i}.acme.test" for i in range(101)], "www.acme.test", [7]):
        await expect(api, "validation_error", "POST", "/v1/pki/acme/orders", json={**base, "domains": domains})
    await expect(api, "acme_account_not_found", "POST", "/v1/pki/acme/orders",
                 json={**base, "account_id": "acct_" + "0" * 24, "domains": ["a.acme.test"]})
    await expect(api, "dns_provider_not_found", "POST", "/v1/pki/acme/orders",
                 json={**base, "dns_provider_id": "dnsp_" + "0" * 24, "domains": ["a.acme.test"]})
    await expect(api, "validation_error", "POST", "/v1/pki/acme/orders", json={"domains": ["a.acme.test"]})
    await expect(api, "acme_order_not_found", "GET", "/v1/pki/acme/orders/acmeo_" + "0" * 24)
    await expect(api, "acme_order_not_found", "GET", "/v1/pki/acme/orders/acmeo_" + "0" * 24 + "/private-key")
    await expect(api, "invalid_request", "POST", "/v1/pki/acme/orders", data=b"{" * 2_000_000,
                 headers={"Content-Type": "application/json"})
    assert await count(api, "orders") == before
    # unicode names go in as A-labels; a wildcard is answered through the same DNS-01 record
    status, order, _ = await api.request("POST", "/v1/pki/acme/orders",
                                         json={**base, "domains": ["bücher.acme.test", "*.wild.acme.test"]})
    assert status == 202 and order["domains"] == ["xn--bcher-kva.acme.test", "*.wild.acme.test"], order
    done = await settled(api, order["id"])
    assert done["status"] == "valid", done
    # an ACME certificate is revoked at its CA, not here
    await expect(api, "invalid_request", "POST", f"/v1/pki/certificates/{done['serial']}:revoke", json={})
    status, page, _ = await api.request("GET", "/v1/pki/acme/orders?status=valid")
    assert order["id"] in [o["id"] for o in page["items"]]
    await expect(api, "validation_error", "GET", "/v1/pki/acme/orders?status=weird")


async def test_the_cas_rate_limit_and_stale_nonces(api: Api, peers: Peers, front: CaFront) -> None:
    front.bad_nonces = 2  # the first two signed requests: badNonce, retried with the fresh nonce
    acct = await account(api, peers, directory_url=front.directory_url)
    assert front.bad_nonces == 0
    dns = await provider(api, peers, name("dns"))
    before = await count(api, "orders")
    front.rate_limit_new_order = True
    try:
        status, body, headers = await api.request("POST", "/v1/pki/acme/orders", json={
            "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["rl.acme.test"]})
        err = assert_envelope(status, body, headers, "backend_rate_limited")
        assert headers["Retry-After"] == "7"
        assert err["details"]["problem"]["type"] == "urn:ietf:params:acme:error:rateLimited"
    finally:
        front.rate_limit_new_order = False
    assert await count(api, "orders") == before
    front.refuse_new_order = True
    try:
        err = await expect(api, "acme_order_failed", "POST", "/v1/pki/acme/orders", json={
            "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["no.acme.test"]})
        assert err["details"]["problem"]["type"] == "urn:ietf:params:acme:error:rejectedIdentifier"
    finally:
        front.refuse_new_order = False
    # every URL the CA hands back passes the outbound guard: an order URL on a private network is refused
    front.order_location = "https://10.0.0.1/my-order/1"
    try:
        err = await expect(api, "backend_error", "POST", "/v1/pki/acme/orders", json={
            "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["evil.acme.test"]})
        assert "outbound guard" in err["message"]
    finally:
        front.order_location = None
    assert await count(api, "orders") == before
    # a CA that does not answer within COFFER_ACME_TIMEOUT (2 s here): on 127.0.0.1, reached through the
    # operator's private allow-list, it reads like one that can't be reached at all (issue #27; a CA at public
    # addresses would answer backend_timeout)
    front.delay = 3.0
    try:
        err = await expect(api, "backend_error", "POST", "/v1/pki/acme/orders", json={
            "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["slow.acme.test"]})
        assert err["message"] == "could not connect to the ACME CA"
        err = await expect(api, "backend_error", "POST", "/v1/pki/acme/accounts",
                           json={"directory_url": front.directory_url, "ca_bundle": peers.tls_root})
        assert err["message"] == "could not connect to the ACME CA"
    finally:
        front.delay = 0.0
    assert await count(api, "orders") == before
    front.bad_nonces = 1
    status, order, _ = await api.request("POST", "/v1/pki/acme/orders", json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["nonce.acme.test"]})
    assert status == 202, order
    assert (await settled(api, order["id"]))["status"] == "valid"
    # a CA that refuses every nonce of a POST and its retries: the new-order answers 502 backend_error (trouble
    # that passes: nothing stored); inside the order's work it is tried again later, never the order's end
    front.bad_nonces = NONCE_RETRIES + 1
    await expect(api, "backend_error", "POST", "/v1/pki/acme/orders", json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["nonces.acme.test"]})
    assert front.bad_nonces == 0 and await count(api, "orders") == before + 1
    status, order, _ = await api.request("POST", "/v1/pki/acme/orders", json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["nonces.acme.test"]})
    assert status == 202, order
    front.bad_nonces = NONCE_RETRIES + 3  # the order's next POST runs out of retries; its next run gets through
    done = await settled(api, order["id"])
    assert done["status"] == "valid" and front.bad_nonces == 0, done


async def test_who_may_do_what(api: Api, peers: Peers) -> None:
    acct = await account(api, peers)
    dns = await provider(api, peers, name("dns"))
    status, order, _ = await api.request("POST", "/v1/pki/acme/orders", json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["who.acme.test"]})
    assert status == 202
    done = await settled(api, order["id"])
    remember_secret((await api.request("GET", f"/v1/pki/acme/orders/{order['id']}/private-key"))[1]["private_key"])
    # another tenant: none of it exists, and its ids can't be ordered through
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("t")})
    stranger = await identity(api, ["pki"], [allow(["**"], ["read", "list", "issue", "manage"])],
                              tenant=tenant["id"])
    t = {"token": stranger["token"]}
    await expect(api, "acme_account_not_found", "GET", f"/v1/pki/acme/accounts/{acct['id']}", **t)
    await expect(api, "dns_provider_not_found", "GET", f"/v1/pki/acme/dns-providers/{dns['id']}", **t)
    await expect(api, "acme_order_not_found", "GET", f"/v1/pki/acme/orders/{order['id']}", **t)
    await expect(api, "acme_order_not_found", "GET", f"/v1/pki/acme/orders/{order['id']}/private-key", **t)
    await expect(api, "certificate_not_found", "GET", f"/v1/pki/certificates/{done['serial']}", **t)
    await expect(api, "acme_account_not_found", "POST", "/v1/pki/acme/orders", **t, json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["steal.acme.test"]})
    for what in ("accounts", "dns-providers", "orders"):
        status, page, _ = await api.request("GET", f"/v1/pki/acme/{what}", **t)
        assert status == 200 and page["items"] == []
    await expect(api, "acme_order_not_found", "DELETE", f"/v1/pki/acme/orders/{order['id']}", **t)
    await expect(api, "dns_provider_not_found", "DELETE", f"/v1/pki/acme/dns-providers/{dns['id']}", **t)
    await expect(api, "acme_account_not_found", "DELETE", f"/v1/pki/acme/accounts/{acct['id']}", **t)
    # helpdesk: may see orders, not their keys, not order, not manage accounts
    helpdesk = await identity(api, ["pki"], [allow(["pki/acme/orders/*"], ["read", "list"])])
    h = {"token": helpdesk["token"]}
    assert (await api.request("GET", f"/v1/pki/acme/orders/{order['id']}", **h))[0] == 200
    await expect(api, "access_denied", "GET", f"/v1/pki/acme/orders/{order['id']}/private-key", **h)
    await expect(api, "access_denied", "POST", "/v1/pki/acme/orders", **h, json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["h.acme.test"]})
    await expect(api, "access_denied", "POST", "/v1/pki/acme/accounts", **h,
                 json={"directory_url": peers.directory_url})
    for path in (f"orders/{order['id']}", f"dns-providers/{dns['id']}", f"accounts/{acct['id']}"):
        await expect(api, "access_denied", "DELETE", f"/v1/pki/acme/{path}", **h)
    # nothing was deleted by either
    for path in (f"orders/{order['id']}", f"dns-providers/{dns['id']}", f"accounts/{acct['id']}"):
        assert (await api.request("GET", f"/v1/pki/acme/{path}"))[0] == 200
    # may order, but not through this account: refused before the CA hears of it
    orderer = await identity(api, ["pki"], [allow(["pki/acme/orders", "pki/acme/dns-providers/*"], ["issue"])])
    await expect(api, "access_denied", "POST", "/v1/pki/acme/orders", token=orderer["token"], json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["o.acme.test"]})
    writer = await identity(api, ["secrets:write"], [allow(["**"], ["read", "manage", "issue"])])
    await expect(api, "insufficient_scope", "GET", "/v1/pki/acme/orders", token=writer["token"])
    # secrets at rest: sealed, and re-wrapped on KEK rotation
    status, rotated, _ = await api.request("POST", "/v1/sys/kms:rotate")
    assert status == 200 and "pki" not in rotated["unreadable"], rotated
    status, bundle, _ = await api.request("GET", f"/v1/pki/acme/orders/{order['id']}/private-key")
    assert status == 200 and bundle["serial"] == done["serial"]


async def test_deleting_a_tenant_destroys_its_acme_accounts_providers_orders_and_keys(
        api: Api, peers: Peers, platform: Platform) -> None:
    status, tenant, _ = await api.request("POST", "/v1/tenants", json={"name": name("acme-t")})
    assert status == 201
    there = {"X-Tenant-ID": tenant["id"]}
    status, acct, _ = await api.request("POST", "/v1/pki/acme/accounts", headers=there, json={
        "directory_url": peers.directory_url, "ca_bundle": peers.tls_root})
    assert status == 201, acct
    status, dns, _ = await api.request("POST", "/v1/pki/acme/dns-providers", headers=there,
                                       json=peers.provider("gone"))
    assert status == 201, dns
    status, order, _ = await api.request("POST", "/v1/pki/acme/orders", headers=there, json={
        "account_id": acct["id"], "dns_provider_id": dns["id"], "domains": ["gone.acme.test"]})
    assert status == 202, order
    deadline = time.monotonic() + 30
    while (await api.request("GET", f"/v1/pki/acme/orders/{order['id']}", headers=there))[1]["status"] != "valid":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert (await api.request("DELETE", f"/v1/tenants/{tenant['id']}"))[0] == 204
    pool = platform.runtimes["pki"].pool
    assert pool is not None
    schema = platform.settings.schema_for("pki")
    deadline = time.monotonic() + 10
    while True:
        left = {t: await pool.fetchval(f'SELECT count(*) FROM "{schema}".{t} WHERE tenant_id = $1', tenant["id"])
                for t in ("acme_accounts", "acme_dns_providers", "acme_orders", "certificates")}
        if not any(left.values()):
            break
        assert time.monotonic() < deadline, f"tenant data left after 10 s: {left}"
        await asyncio.sleep(0.1)
