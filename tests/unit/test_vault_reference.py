"""``docs/api.md``'s Vault-compatible listener table against the listener's route table (api.md §13), as
test_api_reference.py holds the main API's entries to its routes: every route has its row and every row is a
route (the KV mount as documented, ``secret``). Rows, not ``### `METHOD /path``` entries: the listener's
``GET /v1/sys/health`` is another endpoint than the main API's of the same path."""

from __future__ import annotations

import re

from services.gateway.vault.app import routes
from tests.unit.test_api_reference import DOC, normalise

SECTION = "## Vault-compatible listener"
ROW = re.compile(r"^\| `(?P<method>[A-Z]+)` \| `(?P<path>/[^`]*)` \|", re.MULTILINE)


def documented_rows() -> set[tuple[str, str]]:
    text = DOC.read_text()
    assert SECTION in text
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return {normalise(m["method"], m["path"]) for m in ROW.finditer(section)}


def test_every_vault_route_has_its_row_and_every_row_is_a_route() -> None:
    served = {normalise(r.method, r.path) for r in routes("secret")}
    rows = documented_rows()
    assert rows, "no row found: the table's form changed?"
    assert served - rows == set(), "routes without a row in docs/api.md"
    assert rows - served == set(), "rows without a route"


def test_the_mount_is_part_of_every_kv_path() -> None:
    """Another mount moves every KV route under it, and nothing else."""
    moved = {normalise(r.method, r.path) for r in routes("kv")}
    assert ("GET", "/v1/kv/data/{path}") in moved and not any(p.startswith("/v1/secret/") for _, p in moved)
    assert ("GET", "/v1/sys/health") in moved
