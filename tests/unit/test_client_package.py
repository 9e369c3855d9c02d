"""The ``coffer-client`` distribution: its error classes are the server's vocabulary, it needs none of the
server's code or dependencies, and the CLI's pure parts (exit codes, variable names)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from coffer_client import errors
from coffer_client.cli import env_name, exit_code

from shared.errors import REGISTRY
from shared.errors._client import render_client

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "python"


def test_error_classes_are_generated_from_the_servers_vocabulary() -> None:
    for name, text in render_client().items():
        assert (CLIENT / "coffer_client" / name).read_text() == text, f"coffer_client/{name} is stale: run `make docs`"
    assert set(errors.CODES) == set(REGISTRY)
    for code, server in REGISTRY.items():
        client = errors.CODES[code]
        assert client.__name__ == server.__name__ and client.default_status == server.status


def test_an_error_answer_becomes_its_class_and_an_unknown_code_is_kept() -> None:
    body = {"error": {"code": "quota_exceeded", "message": "m", "details": {"limit": 1}, "request_id": "req_1"}}
    error = errors.from_response(429, body, retry_after=30)
    assert isinstance(error, errors.QuotaExceeded) and isinstance(error, errors.Throttled)
    assert (error.status, error.details, error.request_id, error.retry_after) == (429, {"limit": 1}, "req_1", 30)
    newer = errors.from_response(400, {"error": {"code": "from_the_future", "message": "x"}})
    assert type(newer) is errors.CofferError and newer.code == "from_the_future"
    assert errors.from_response(502, "<html>").status == 502


def test_the_client_needs_no_server_dependency_or_code() -> None:
    deps = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower() for d in deps}
    assert names == {"httpx", "click", "rich", "tomli-w"}
    # imported with every server module and server-only dependency made unimportable
    blocker = ("import sys, importlib.abc\n"
               "class Block(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in {'shared', 'services', 'asyncpg', 'aio_pika', 'aiormq', 'pgserver',"
               " 'pydantic', 'structlog'}:\n"
               "            raise ImportError('server code: ' + name)\n"
               "sys.meta_path.insert(0, Block())\n"
               "import coffer_client, coffer_client.cli\n"
               "print('ok')\n")
    run = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, cwd=CLIENT, timeout=60)
    assert run.stdout.strip() == "ok", run.stderr


def test_exit_codes_and_variable_names() -> None:
    assert [exit_code(s) for s in (400, 401, 403, 404, 409, 410, 422, 429, 500, 502, 503, 0)] == \
        [1, 3, 4, 5, 6, 6, 1, 7, 8, 8, 8, 8]
    assert env_name("app/prod/db/password", "app/prod/") == "DB_PASSWORD"
    assert env_name("app/prod/api.key-v2", "app/prod/") == "API_KEY_V2"
    assert env_name("app/prod/ключ", "app/prod/") == "____"


def test_every_api_call_has_a_client_method() -> None:
    from coffer_client import AsyncClient, Client
    from coffer_client.client import API_CALLS

    from services.gateway.bootstrap import ROUTES

    served = {(r.method, p) for r in ROUTES for p in (r.doc_paths or (r.path,))}
    assert set(API_CALLS) == served, {"no method": sorted(served - set(API_CALLS)),
                                      "no route": sorted(set(API_CALLS) - served)}
    for method in API_CALLS.values():
        assert callable(getattr(Client, method)) and callable(getattr(AsyncClient, method)), method
