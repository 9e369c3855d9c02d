"""``docs/api.md``, the API reference, against the gateway's route table.

Every route the gateway serves has an entry in the reference and every entry is a route that exists, so a
new route without its entry (or an entry left behind by a removed route) fails here, as the Python client's
route-coverage test does for client methods. An entry is a heading of its own::

    ### `POST /v1/secrets/{path}:restore`

Both sides are normalised the same way (``normalise``): the method upper-cased, a path parameter's regular
expression left out (``{tail:[\\s\\S]+}`` → ``{tail}``), no trailing slash. A route serving several documented
paths (``Route.doc_paths``: ``…:restore``, ``…:purge`` …) needs an entry for each, as the OpenAPI description
lists each. Each entry also names the success statuses and the route-specific error codes its route declares
(``Route.statuses``, ``Route.errors``), and every code an entry's ``Errors:`` line names is in the vocabulary.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from services.gateway.edge.routes import Route
from shared.errors import REGISTRY

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: an entry's heading: "### `METHOD /path`" alone on its line
ENTRY = re.compile(r"^### `(?P<method>[A-Z]+) (?P<path>/\S*)`\s*$")
#: a line that looks like an entry but is not in the form above (a typo would hide an entry)
LOOKS_LIKE_ENTRY = re.compile(r"^#{1,6}\s.*`(?:" + "|".join(METHODS) + r")\s+/")
_PARAM_REGEX = re.compile(r"\{(\w+):[^{}]*\}")
_STATUS = re.compile(r"`([1-5][0-9]{2})`")
_CODE = re.compile(r"`([a-z][a-z0-9_]*)`")

Key = tuple[str, str]


def normalise(method: str, path: str) -> Key:
    """One route or entry as both sides compare it: ``("POST", "/v1/secrets/{path}:restore")``."""
    path = _PARAM_REGEX.sub(r"{\1}", path.strip())
    if len(path) > 1:
        path = path.rstrip("/")
    return method.strip().upper(), path


def served(routes: Iterable[Route]) -> dict[Key, Route]:
    """Every documented (method, path) of ``routes``, with the route serving it."""
    return {normalise(r.method, p): r for r in routes for p in (r.doc_paths or (r.path,))}


def entries(text: str) -> dict[Key, str]:
    """Every entry of the reference and its text (up to the next heading of level 1–3)."""
    found: dict[Key, str] = {}
    current: Key | None = None
    body: list[str] = []
    for line in [*text.splitlines(), "### end"]:
        match = ENTRY.match(line)
        if match or re.match(r"^#{1,3}\s", line):
            if current is not None:
                found[current] = "\n".join(body)
            current, body = None, []
            if match:
                key = normalise(match["method"], match["path"])
                assert key not in found, f"docs/api.md documents {key} twice"
                current = key
            continue
        body.append(line)
    return found


def gaps(routes: Iterable[Route], text: str) -> dict[str, list[Key]]:
    """Routes without an entry, and entries without a route."""
    have, documented = served(routes), entries(text)
    return {"no entry in docs/api.md": sorted(set(have) - set(documented)),
            "documented but not a route": sorted(set(documented) - set(have))}


def _routes() -> tuple[Route, ...]:
    from services.gateway.bootstrap import ROUTES

    return ROUTES


def test_every_route_has_an_entry_and_every_entry_is_a_route() -> None:
    problems = gaps(_routes(), DOC.read_text())
    assert not any(problems.values()), problems


def test_entries_are_headings_in_the_one_form() -> None:
    """A heading that names an endpoint in another form would be missed: each must be ``### `METHOD /path```."""
    odd = [line for line in DOC.read_text().splitlines() if LOOKS_LIKE_ENTRY.match(line) and not ENTRY.match(line)]
    assert not odd, odd
    assert all(method in METHODS for method, _ in entries(DOC.read_text())), "an entry with an unknown method"


def test_a_new_route_without_an_entry_fails_and_so_does_an_entry_without_a_route() -> None:
    async def handler(request: object) -> None: ...

    text, routes = DOC.read_text(), _routes()

    def added(key: str, more: list[Route], doc: str = text) -> list[Key]:
        """What ``more`` routes (or ``doc``) add to the gaps of the real table and reference."""
        before = set(gaps(routes, text)[key])
        return sorted(set(gaps([*routes, *more], doc)[key]) - before)

    extra = Route("POST", r"/v1/widgets/{id:[a-z_0-9]+}:frobnicate", handler)  # type: ignore[arg-type]
    assert added("no entry in docs/api.md", [extra]) == [("POST", "/v1/widgets/{id}:frobnicate")]
    several = Route("GET", r"/v1/widgets/{tail:[\s\S]+}", handler,  # type: ignore[arg-type]
                    doc_paths=("/v1/widgets/{id}", "/v1/widgets/{id}:parts"))
    assert added("no entry in docs/api.md", [several]) == [("GET", "/v1/widgets/{id}"),
                                                           ("GET", "/v1/widgets/{id}:parts")]
    stale = text + "\n## Widgets\n\n### `DELETE /v1/widgets/{id}/`\n\nGone.\n"
    assert added("documented but not a route", [], stale) == [("DELETE", "/v1/widgets/{id}")]
    # ... and once documented, the new route is covered
    covered = text + "\n## Widgets\n\n### `POST /v1/widgets/{id}:frobnicate`\n"
    assert ("POST", "/v1/widgets/{id}:frobnicate") not in gaps([*routes, extra], covered)["no entry in docs/api.md"]
    # both sides normalised alike: a parameter's expression, the method's case, a trailing slash
    assert normalise("post", "/v1/leases/{id}:{action:(renew|revoke)}/") == ("POST", "/v1/leases/{id}:{action}")


def test_each_entry_names_its_statuses_and_its_routes_error_codes() -> None:
    """What the route table declares (success statuses, the route's own error codes) is in its entries: a route
    serving several paths may spread them over its entries (``:purge`` is the 204, ``:restore`` the 200)."""
    documented = entries(DOC.read_text())
    by_route: dict[int, tuple[Route, list[str]]] = {}
    for key, route in served(_routes()).items():
        by_route.setdefault(id(route), (route, []))[1].append(documented.get(key, ""))
    missing: dict[str, dict[str, list[str]]] = {}
    for route, texts in by_route.values():
        text = "\n".join(texts)
        statuses = [str(s) for s in route.statuses if str(s) not in _STATUS.findall(text)]
        codes = [c for c in route.errors if f"`{c}`" not in text]
        if statuses or codes:
            missing[f"{route.method} {route.doc_paths or route.path}"] = {"statuses": statuses, "errors": codes}
    assert not missing, missing


def test_every_code_an_entry_names_is_in_the_vocabulary() -> None:
    """In an entry's ``Errors:`` paragraph, a word in backticks is an error code (fields and details are
    written ``details.x`` or without backticks there), and every such code is one the server has."""
    unknown = {}
    for key, text in entries(DOC.read_text()).items():
        for paragraph in text.split("\n\n"):
            if paragraph.lstrip().startswith("Errors:"):
                wrong = sorted(set(_CODE.findall(paragraph)) - set(REGISTRY))
                if wrong:
                    unknown[key] = wrong
    assert not unknown, unknown


def test_the_reference_stays_inside_the_repository() -> None:
    """Users have the repository only: every link is to the web, to this page, or to a file of the repository."""
    text, root = DOC.read_text(), DOC.parents[1]
    assert "shared/docs" not in text and "/work/" not in text
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if link.startswith(("http://", "https://", "#")):
            continue
        target = (DOC.parent / link.split("#")[0]).resolve()
        assert not link.startswith("/") and target.is_relative_to(root) and target.exists(), link
