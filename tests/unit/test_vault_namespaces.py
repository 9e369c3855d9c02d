"""``X-Vault-Namespace`` by name (api.md §13): a name outside the caller's reach costs what a name no tenant has.

Attack: an ordinary account of another tenant timed ``X-Vault-Namespace: <name>``: a name some other tenant
has took a second query (is it below me?) that a name no tenant has did not — ~0.15 ms, measurable in a few
hundred tries — so it learnt which tenant names exist, though the answer (403) was the same. The name is now
looked up within the caller's subtree in one query, the same work whatever other tenants are called.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from services.gateway.iam.domain import Principal
from services.gateway.state import STATE
from services.gateway.vault.app import namespace_tenant

MINE, CHILD, FOREIGN = "ten_aaaa", "ten_bbbb", "ten_cccc"
NAMES = {"mine": MINE, "child": CHILD, "foreign": FOREIGN}


class Tenants:
    """Tenants ``mine`` > ``child``, and ``foreign`` elsewhere; every call recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def __getattr__(self, method: str) -> Any:
        async def call(*args: str) -> Any:
            self.calls.append((method, *(a if a in (MINE, CHILD) else "?" for a in args)))
            if method == "id_in_reach":
                name, root = args
                reach = (MINE, CHILD) if root == MINE else ()
                return NAMES.get(name) if NAMES.get(name) in reach else None
            if method == "id_by_name":
                return NAMES.get(args[0])
            raise AssertionError(f"unexpected {method}")
        return call


def request(namespace: str, tenants: Tenants) -> web.Request:
    app = web.Application()
    app[STATE] = SimpleNamespace(tenants=tenants)  # type: ignore[misc]
    return make_mocked_request("GET", "/v1/sys/mounts", headers={"X-Vault-Namespace": namespace}, app=app)


def who(tenant: str) -> Principal:
    return Principal(identity_id="idn_x", tenant_id=tenant, scopes=frozenset(), expires_at=datetime.now(UTC),
                     token_id="tok_x")


@pytest.mark.parametrize(("namespace", "resolved"), [("mine", MINE), ("child", CHILD), ("foreign", "foreign"),
                                                     ("nobody", "nobody"), (CHILD, CHILD), ("a/b", "a/b")])
async def test_a_name_resolves_only_within_reach(namespace: str, resolved: str) -> None:
    assert await namespace_tenant(request(namespace, Tenants()), who(MINE)) == resolved


async def test_a_foreign_name_and_an_unknown_one_cost_the_same_queries() -> None:
    seen = []
    for namespace in ("foreign", "nobody"):
        tenants = Tenants()
        await namespace_tenant(request(namespace, tenants), who(MINE))
        seen.append(tenants.calls)
    assert seen[0] == seen[1] == [("id_in_reach", "?", MINE)]


async def test_a_login_names_any_tenant() -> None:  # no caller yet: the tenant whose method logs in
    assert await namespace_tenant(request("foreign", Tenants())) == FOREIGN
