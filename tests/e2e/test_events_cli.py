"""The event stream from the client side (issue #31): ``Client.events`` and ``AsyncClient.events`` resuming by
themselves, ``coffer events tail``, and ``coffer run --watch`` restarting (or signalling) a program when its
secrets change — each against a live embedded platform, the CLI as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from coffer_client import AsyncClient, Client, Event

from services.gateway.state import STATE
from services.platform import Platform
from tests.conftest import Api, initialised, own_platform, remember_secret
from tests.e2e.iam_helpers import allow, identity, name
from tests.e2e.test_cli import COFFER

WATCHER = ["secrets:read", "secrets:write", "events"]


@pytest.fixture(scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory, pg_dsn: str) -> AsyncIterator[Platform]:
    async with own_platform("embedded", tmp_path_factory.mktemp("events-cli"), pg_dsn) as p:
        yield p


@pytest.fixture(scope="module")
async def api(platform: Platform, http: aiohttp.ClientSession) -> Api:
    return await initialised(platform, http)


@pytest.fixture(scope="module")
async def watcher(api: Api) -> dict[str, Any]:
    return await identity(api, WATCHER, [allow(["secrets/**"], ["read", "list"])])


async def put(api: Api, path: str, value: str | None = None) -> str:
    value = remember_secret(value or f"v-{name()}")
    status, body, _ = await api.request("PUT", f"/v1/secrets/{path}", json={"value": value})
    assert status in (200, 201), body
    return value


def drop_streams(platform: Platform) -> None:
    """The gateway ends every open stream (as when it stops): the clients must come back by themselves."""
    hub = platform.app[STATE].events
    for streams in list(hub._streams.values()):  # noqa: SLF001
        for stream in list(streams):
            stream.cut("shutdown")


async def test_the_sync_client_resumes_by_itself_after_a_drop(platform: Platform, api: Api,
                                                              watcher: dict[str, Any]) -> None:
    base = name("sync")
    got: list[Event] = []
    connected, two = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def consume() -> None:
        with Client(platform.url, watcher["token"]) as client:
            for event in client.events(types=["secret.*"], path_pattern=f"{base}/**",
                                       on_connect=lambda: loop.call_soon_threadsafe(connected.set)):
                got.append(event)
                if len(got) == 2:
                    loop.call_soon_threadsafe(two.set)
                if len(got) == 4:
                    return

    reading = asyncio.create_task(asyncio.to_thread(consume))
    await asyncio.wait_for(connected.wait(), 5)
    await put(api, f"{base}/1")
    await put(api, f"{base}/2")
    await asyncio.wait_for(two.wait(), 5)
    connected.clear()
    drop_streams(platform)
    await put(api, f"{base}/3")  # while the client is away
    await asyncio.wait_for(connected.wait(), 5)
    await put(api, f"{base}/4")
    await asyncio.wait_for(reading, 5)
    assert [e.data["path"] for e in got] == [f"{base}/{i}" for i in (1, 2, 3, 4)]
    assert all(e.type == "secret.created" and e.id for e in got) and len({e.id for e in got}) == 4


async def test_the_async_client_is_async_for(platform: Platform, api: Api, watcher: dict[str, Any]) -> None:
    base = name("async")
    connected = asyncio.Event()
    async with AsyncClient(platform.url, watcher["token"]) as client:
        stream = client.events(path_pattern=f"{base}/**", on_connect=connected.set)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.wait_for(connected.wait(), 5)
        await put(api, f"{base}/a")
        event = await asyncio.wait_for(first, 5)
        assert (event.type, event.data["path"]) == ("secret.created", f"{base}/a")
        drop_streams(platform)
        await put(api, f"{base}/b")
        event = await asyncio.wait_for(stream.__anext__(), 5)
        assert event.data["path"] == f"{base}/b"
        await stream.aclose()  # type: ignore[attr-defined]


def cli_env(platform: Platform, token: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    env.update({"XDG_CONFIG_HOME": str(home), "COFFER_ADDR": platform.url or "", "COFFER_TOKEN": token})
    return env


async def test_events_tail_prints_a_json_line_per_event(platform: Platform, api: Api, watcher: dict[str, Any],
                                                         tmp_path: Path) -> None:
    base = name("tail")
    proc = await asyncio.create_subprocess_exec(
        *COFFER, "events", "tail", "--types", "secret.created", "--path", f"{base}/**",
        env=cli_env(platform, watcher["token"], tmp_path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        line = b""
        deadline = time.monotonic() + 15
        while not line:  # written until the tail (started in its own time) has its stream open
            value = await put(api, f"{base}/k{int(time.monotonic() * 1000)}")
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 1)
            except TimeoutError:
                assert time.monotonic() < deadline, "coffer events tail printed nothing"
        event = json.loads(line)
        assert event["type"] == "secret.created" and event["data"]["path"].startswith(f"{base}/k")
        assert set(event) == {"id", "type", "tenant_id", "occurred_at", "request_id", "data"}
        assert value.encode() not in line
    finally:
        proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(proc.wait(), 10)


PROGRAM = """
import os, signal, sys, time
log = open(sys.argv[1], "a")
def note(text):
    log.write(text + "\\n"); log.flush()
note("start " + os.environ.get("DB_PASSWORD", "-"))
signal.signal(signal.SIGHUP, lambda *_: note("hup"))
signal.signal(signal.SIGTERM, lambda *_: (note("term"), sys.exit(0)))
while True:
    time.sleep(0.02)
"""


async def watched(platform: Platform, token: str, tmp_path: Path, base: str, *extra: str) -> tuple[Any, Path]:
    log = tmp_path / "program.log"
    proc = await asyncio.create_subprocess_exec(
        *COFFER, "run", "--watch", "--prefix", base, *extra, "--", sys.executable, "-c", PROGRAM, str(log),
        env=cli_env(platform, token, tmp_path), stderr=asyncio.subprocess.PIPE)
    await lines_become(log, lambda lines: len(lines) >= 1)
    return proc, log


async def lines_become(log: Path, done: Any, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = log.read_text().splitlines() if log.exists() else []  # noqa: ASYNC240 - a few bytes
        if done(lines):
            return lines
        assert time.monotonic() < deadline, lines
        await asyncio.sleep(0.05)


async def test_run_watch_restarts_once_for_a_burst_with_the_new_value(
        platform: Platform, api: Api, watcher: dict[str, Any], tmp_path: Path) -> None:
    base = name("watch")
    old = await put(api, f"{base}/db/password")
    proc, log = await watched(platform, watcher["token"], tmp_path, base)
    try:
        assert log.read_text().splitlines() == [f"start {old}"]
        new = remember_secret(f"new-{name()}")
        started = time.monotonic()
        await asyncio.gather(put(api, f"{base}/db/password", new), *(put(api, f"{base}/other/{i}") for i in range(9)))
        lines = await lines_become(log, lambda lines: len(lines) >= 3)
        assert time.monotonic() - started < 3.0
        await asyncio.sleep(1.2)  # longer than the debounce: no second restart comes
        assert log.read_text().splitlines() == [f"start {old}", "term", f"start {new}"]
        await put(api, "elsewhere/not-watched")
        await asyncio.sleep(0.8)
        assert log.read_text().splitlines() == lines
    finally:
        proc.send_signal(signal.SIGTERM)  # passed on: the program exits 0, and so does coffer
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert proc.stderr is not None
    err = (await proc.stderr.read()).decode()
    assert "restarting" in err and old not in err and new not in err


async def test_run_watch_can_send_a_signal_instead(platform: Platform, api: Api, watcher: dict[str, Any],
                                                   tmp_path: Path) -> None:
    base = name("hup")
    old = await put(api, f"{base}/db/password")
    proc, log = await watched(platform, watcher["token"], tmp_path, base, "--on-change", "signal:HUP")
    try:
        await put(api, f"{base}/db/password")
        await lines_become(log, lambda lines: lines[-1:] == ["hup"])
        assert log.read_text().splitlines() == [f"start {old}", "hup"]  # the same process, not restarted
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    bad = await asyncio.create_subprocess_exec(
        *COFFER, "run", "--watch", "--on-change", "signal:NOPE", "--prefix", base, "--", "true",
        env=cli_env(platform, "unused", tmp_path), stderr=asyncio.subprocess.PIPE)
    assert await bad.wait() == 2
