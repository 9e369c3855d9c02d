"""Audit ``:match`` is no oracle (issue #27, finding 4; api.md §2): the "readable only" filter runs before the
page is cut, and ``next_cursor`` says nothing about entries the caller can't read.

Each test works in a tenant of its own, so the log it reads is only its own writes.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.gateway.audit import routes as audit_routes
from services.platform import Platform
from shared.cursors import CursorCodec
from shared.db import sealed_keys
from tests.conftest import Api, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_tenants import tenant


@pytest.fixture
async def codec(platform: Platform) -> CursorCodec:
    """The gateway's cursor codec: cursors are sealed, only it can say where one resumes."""
    deps = platform.runtimes["gateway"].deps
    assert deps is not None
    return CursorCodec(await sealed_keys.ensure_key(deps.pool, deps.kms, deps.schema, "cursor"))


def _resume(cursor: str | None, codec: CursorCodec) -> Any:
    """Where a cursor resumes, or ``None`` for no cursor."""
    return None if cursor is None else codec.resumes_at(cursor)


async def _setup(api: Api) -> tuple[dict[str, Any], str, str]:
    """A tenant whose log holds two writes of a hidden value, then two of a visible one; an auditor there that
    may read only the visible paths (and the audit log). Returns (auditor, hidden value, visible value)."""
    ten = (await tenant(api))["id"]
    at = {"X-Tenant-ID": ten}
    hidden, visible = remember_secret(f"hidden-{name()}"), remember_secret(f"visible-{name()}")
    for path, value in (("hid/a", hidden), ("hid/b", hidden), ("vis/c", visible), ("vis/d", visible)):
        status, body, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": value}, headers=at)
        assert status == 201, body
    auditor = await identity(api, ["admin"], [allow(["sys/audit"], ["read"]), allow(["secrets/vis/**"], ["read"])],
                             tenant=ten)
    return auditor, hidden, visible


async def _pages(api: Api, auditor: dict[str, Any], value: str, limit: int,
                 codec: CursorCodec) -> list[tuple[list[Any], Any]]:
    """Every page of a match over the tenant's secrets, followed to the end: (resources of the items, where
    the cursor resumes). (``path_prefix`` leaves out the entries of the auditor's own ``:match`` calls, which
    hold the value too.)"""
    pages, cursor = [], None
    for _ in range(100):
        url = f"/v1/audit/events:match?limit={limit}&path_prefix=secrets/" + (f"&cursor={cursor}" if cursor else "")
        status, page, _ = await api.request("POST", url, json={"value": value}, token=auditor["token"])
        assert status == 200, page
        assert set(page) == {"items", "next_cursor"}
        pages.append(([e["resource"] for e in page["items"]], _resume(page["next_cursor"], codec)))
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the pages never end")


async def test_a_guess_at_a_value_the_caller_cant_read_answers_like_a_wrong_guess(api: Api) -> None:
    """Two hidden entries hold the value: on the old code a page of one got ``items: []`` with a cursor for the
    right guess and ``next_cursor: null`` for a wrong one."""
    auditor, hidden, _ = await _setup(api)
    wrong = f"not-it-{name()}"
    for limit in (1, 2, 100):
        for guess in (hidden, wrong):
            status, page, _ = await api.request("POST", f"/v1/audit/events:match?limit={limit}&path_prefix=secrets/",
                                                json={"value": guess}, token=auditor["token"])
            assert status == 200 and page == {"items": [], "next_cursor": None}, (limit, guess == hidden, page)


async def test_readable_matches_are_found_behind_hidden_ones_and_across_pages(api: Api, codec: CursorCodec,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    auditor, hidden, visible = await _setup(api)
    monkeypatch.setattr(audit_routes, "MATCH_CHUNK", 1)  # matches fetched a page's worth at a time: several rounds
    for n, value in enumerate((hidden, visible)):  # a value at a hidden and then a readable path: found behind it
        for path in (f"hid/e{n}", f"vis/f{n}"):
            status, body, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": value},
                                                headers={"X-Tenant-ID": auditor["tenant_id"]})
            assert status == 201, body
    # (vis/f0 holds the hidden value: the auditor may read that path, so that entry is found)
    status, page, _ = await api.request("POST", "/v1/audit/events:match?path_prefix=secrets/&limit=1",
                                        json={"value": hidden}, token=auditor["token"])
    assert status == 200 and [e["resource"] for e in page["items"]] == ["secrets/vis/f0"]
    one = await _pages(api, auditor, visible, 1, codec)
    assert [items for items, _ in one] == [["secrets/vis/c"], ["secrets/vis/d"], ["secrets/vis/f1"]]
    assert [resume is None for _, resume in one] == [False, False, True]
    assert await _pages(api, auditor, visible, 3, codec) == [
        (["secrets/vis/c", "secrets/vis/d", "secrets/vis/f1"], None)]
    status, page, _ = await api.request("POST", "/v1/audit/events:match", json={"value": visible},
                                        token=auditor["token"])  # without a prefix: its own questions too
    resources = [e["resource"] for e in page["items"]]
    assert resources[:3] == ["secrets/vis/c", "secrets/vis/d", "secrets/vis/f1"]
    assert set(resources[3:]) == {"sys/audit"} and page["next_cursor"] is None


@pytest.mark.parametrize("scan", [2, 3])
async def test_a_bounded_scan_pages_alike_for_a_right_and_a_wrong_guess(api: Api, scan: int, codec: CursorCodec,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a window of ``scan`` entries per call, a page that isn't full ends where the window ends, whatever
    matched in it: the hidden value's pages and a wrong guess's hold no items and resume at the same entries
    (every ``scan``-th of the log), while the visible value is still found on the way through the log."""
    auditor, hidden, visible = await _setup(api)
    monkeypatch.setattr(audit_routes, "MATCH_SCAN", scan)
    right = await _pages(api, auditor, hidden, 1, codec)
    wrong = await _pages(api, auditor, f"not-it-{name()}", 1, codec)
    status, log, _ = await api.request("GET", "/v1/audit/events?limit=1000", token=auditor["token"])
    assert status == 200
    every = [e["seq"] for e in log["items"]][scan - 1::scan]  # the log grows by each call: compare what both saw
    for pages in (right, wrong):
        assert len(pages) > 2 and all(items == [] for items, _ in pages) and pages[-1][1] is None
        assert [resume for _, resume in pages[:-1]] == every[:len(pages) - 1]
    shared = min(len(right), len(wrong)) - 1
    assert right[:shared] == wrong[:shared]
    found = [resource for items, _ in await _pages(api, auditor, visible, 1, codec) for resource in items]
    assert found == ["secrets/vis/c", "secrets/vis/d"]
