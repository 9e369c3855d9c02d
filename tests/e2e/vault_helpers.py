"""Helpers of the Vault-listener tests (api.md §13): ``hvac`` clients, run off the event loop, and the
wire-shape comparison with Vault's documented answers (tests/fixtures/vault/).

``hvac`` is synchronous (``requests``) and the platform under test runs on the test's own event loop, so
every hvac call goes to a thread (``off``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import hvac

from services.platform import Platform
from tests.conftest import Api, initialised, own_platform, remember_secret

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "vault"
T = TypeVar("T")


def vault(url: str, token: str | None = None, namespace: str | None = None) -> hvac.Client:
    """An unmodified hvac client of the listener at ``url``."""
    return hvac.Client(url=url, token=token, namespace=namespace, timeout=10)


async def off(call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` in a thread (hvac blocks; the platform answers on this loop)."""
    return await asyncio.to_thread(call, *args, **kwargs)


def documented(name: str) -> Any:
    """The response Vault's API docs give for ``name`` (the fixture names its source)."""
    fixture = json.loads((FIXTURES / f"{name}.json").read_text())
    assert fixture["source"].startswith("https://developer.hashicorp.com/vault/api-docs/"), fixture["source"]
    return fixture["response"]


def kind(value: Any) -> str:
    """The JSON type of ``value`` (a bool is not a number)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


#: maps whose keys are the user's (custom metadata, a token's metadata): their values' types are compared only
FREE_MAPS = ("custom_metadata", "metadata", "meta")


def assert_shape(ours: Any, theirs: Any, where: str = "$", *, allow: dict[str, str] | None = None) -> None:
    """Every field of Vault's documented answer is in ours, with the same JSON type, all the way down (a field
    Vault documents as ``null`` may hold anything; array items compare with the documented first item).
    ``allow``: ``{"$.data.expiration": "number"}`` — where an example contradicts what Vault answers, the type
    Vault really answers (the fixture's ``note`` says so)."""
    if theirs is None or (allow and allow.get(where) == kind(ours)):
        return
    assert kind(ours) == kind(theirs), f"{where}: ours is {kind(ours)} {ours!r}, Vault's is {kind(theirs)}"
    if isinstance(theirs, dict) and where.rsplit(".", 1)[-1] in FREE_MAPS:
        assert {kind(v) for v in ours.values()} <= {kind(v) for v in theirs.values()}, where
    elif isinstance(theirs, dict):
        missing = sorted(set(theirs) - set(ours))
        assert not missing, f"{where}: missing {missing}"
        for key, value in theirs.items():
            assert_shape(ours[key], value, f"{where}.{key}", allow=allow)
    elif isinstance(theirs, list) and theirs:
        for index, item in enumerate(ours):
            assert_shape(item, theirs[0], f"{where}[{index}]", allow=allow)


def client_token(answer: dict[str, Any]) -> str:
    """The token of a login or renewal answer (remembered: never to be logged)."""
    return str(remember_secret(answer["auth"]["client_token"]))


@contextlib.asynccontextmanager
async def vault_platform(mode: str, tmp: Path, pg_dsn: str, http: aiohttp.ClientSession,
                         **over: Any) -> AsyncIterator[tuple[Platform, Api, str]]:
    """A platform with the Vault listener on a free port, initialised: ``(platform, admin api, listener url)``."""
    async with own_platform(mode, tmp, pg_dsn, vault_listen="127.0.0.1:0", **over) as platform:
        api = await initialised(platform, http)
        yield platform, api, platform.urls["vault"]
