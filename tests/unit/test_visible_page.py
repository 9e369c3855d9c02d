"""``CursorCodec.visible_page``: rows kept before the page is cut, so a page's cursor says nothing of rows the
caller can't see."""

from __future__ import annotations

from typing import Any

from shared.cursors import CursorCodec

ROWS = [{"id": f"r{i:03d}", "mine": i % 3 == 0} for i in range(30)]


def codec() -> CursorCodec:
    return CursorCodec(b"k" * 32)


async def fetch(after: Any, n: int) -> list[dict[str, Any]]:
    return [r for r in ROWS if after is None or r["id"] > after][:n]


async def mine(rows: Any) -> list[Any]:
    return [r for r in rows if r["mine"]]


async def nothing(rows: Any) -> list[Any]:
    return []


async def test_pages_of_kept_rows_and_a_cursor_only_while_kept_rows_follow() -> None:
    c, got, cursor = codec(), [], None
    while True:
        page, cursor = await c.visible_page("ten_1", {"q": 1}, cursor, 4, fetch, lambda r: r["id"], mine, chunk=5)
        got += page
        if cursor is None:
            break
    assert got == [r for r in ROWS if r["mine"]]


async def test_hidden_rows_alone_give_an_empty_page_without_cursor() -> None:
    page, cursor = await codec().visible_page("ten_1", {"q": 1}, None, 1, fetch, lambda r: r["id"], nothing, chunk=7)
    assert (page, cursor) == ([], None)


async def test_a_used_up_window_resumes_after_it() -> None:
    c = codec()
    page, cursor = await c.visible_page("ten_1", {"q": 1}, None, 1, fetch, lambda r: r["id"], nothing,
                                        chunk=5, window=10)
    assert page == [] and cursor is not None
    page, cursor = await c.visible_page("ten_1", {"q": 1}, cursor, 1, fetch, lambda r: r["id"], mine,
                                        chunk=5, window=10)
    assert [r["id"] for r in page] == ["r012"] and cursor is not None
