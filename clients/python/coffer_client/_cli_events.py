"""``coffer events tail`` and what ``coffer run --watch`` does: follow the tenant's events from the shell.

``--watch`` keeps coffer as the program's parent instead of replacing itself with it: it opens the event
stream first (so nothing that changes while the secrets are read is missed), reads the secrets, starts the
program, and then, when a secret under its prefixes changes, waits until the changes stop for ``--debounce``
seconds (a rotation of ten secrets is one restart) and either restarts the program — the secrets read again
first (a failed read keeps the running program), then SIGTERM, ``--grace`` seconds, SIGKILL if need be, and
the program started with the new environment — or sends it a signal (``--on-change signal:HUP``). Signals
coffer gets are passed to the program; coffer exits with the program's status when the program exits by
itself. A stream that ends for good (the token expired or was revoked) stops the watching, not the program.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import click

from coffer_client._cli_common import _ctx_state, _mode, output_option
from coffer_client.client import Client
from coffer_client.errors import CofferError

#: reads the secrets: the program's environment, and how many secrets are in it
Loader = Callable[[], tuple[dict[str, str], int]]
#: a prefix that is also a glob's plain text (else the stream is not narrowed by path, only here)
_PLAIN = re.compile(r"^[A-Za-z0-9._\-/]*$")


@click.group()
def events() -> None:
    """Follow the tenant's events (those your policies let you list)."""


@events.command("tail")
@click.option("--types", help="comma-separated event type patterns (secret.*,lease.*) [every type]")
@click.option("--path", "path_pattern", help="only events whose path matches this glob (app/prod/**)")
@output_option
def events_tail(types: str | None, path_pattern: str | None, output: str | None) -> None:
    """Print events as they come, until interrupted (one JSON object a line in a pipe, or with -o json)."""
    client = _ctx_state().client()
    as_json = _mode(output) == "json"
    patterns = [t.strip() for t in types.split(",") if t.strip()] if types else None
    for event in client.events(types=patterns, path_pattern=path_pattern):
        if as_json:
            click.echo(json.dumps({"id": event.id, "type": event.type, "tenant_id": event.tenant_id,
                                   "occurred_at": event.occurred_at, "request_id": event.request_id,
                                   "data": event.data}, ensure_ascii=False, separators=(",", ":")))
        elif event.type == "reset":
            click.echo("-- events may have been missed here (the stream could not resume): read the state again --")
        else:
            click.echo(f"{event.occurred_at or ''}  {event.type}  {_summary(event.data)}")
        sys.stdout.flush()


def _summary(data: dict[str, Any]) -> str:
    first = data.get("path") or data.get("lease_id") or data.get("name") or data.get("webhook_id") or ""
    rest = " ".join(f"{k}={v}" for k, v in data.items() if v != first and not isinstance(v, (dict, list)))
    return f"{first}  {rest}".strip()


# -- coffer run --watch -------------------------------------------------------------------------------------

def parse_on_change(value: str) -> signal.Signals | None:
    """``restart`` → None; ``signal:HUP`` / ``signal:SIGUSR1`` / ``signal:10`` → that signal."""
    if value == "restart":
        return None
    kind, _, name = value.partition(":")
    try:
        if kind != "signal" or not name:
            raise ValueError
        return signal.Signals(int(name)) if name.isdigit() else signal.Signals[
            name.upper() if name.upper().startswith("SIG") else "SIG" + name.upper()]
    except (KeyError, ValueError):
        raise click.BadParameter("restart, or signal:NAME (signal:HUP, signal:USR1)",
                                 param_hint="--on-change") from None


class Watcher:
    """The event stream, on a thread of its own: each change under ``bases`` put on ``changes``."""

    def __init__(self, client: Client, bases: Sequence[str]) -> None:
        # a client of its own: the main thread reads secrets meanwhile
        self.client = Client(client.addr, client.token or "", tenant=client.tenant or "", retries=client.retries)
        self.bases = list(bases)
        self.changes: queue.Queue[str] = queue.Queue()
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, name="coffer-watch", daemon=True)

    def _run(self) -> None:
        plain = len(self.bases) == 1 and self.bases[0] and _PLAIN.fullmatch(self.bases[0])
        try:
            for event in self.client.events(types=["secret.*"], path_pattern=self.bases[0] + "**" if plain else None,
                                            on_connect=self.connected.set):
                if event.type == "reset":
                    self.changes.put("")  # anything may have changed
                elif event.type != "secret.rotation_failed":
                    path = str(event.data.get("path", ""))
                    if any(path.startswith(base) for base in self.bases):
                        self.changes.put(path)
        except CofferError as exc:
            click.echo(f"coffer: no longer watching for changes: {exc.code}: {exc.message}", err=True)
        except Exception as exc:  # noqa: BLE001 - the program keeps running
            click.echo(f"coffer: no longer watching for changes: {exc}", err=True)
        finally:
            self.connected.set()


class Supervisor:
    """The program, restarted (or signalled) when its secrets change."""

    def __init__(self, argv: list[str], load: Loader, on_change: signal.Signals | None, debounce: float,
                 grace: float) -> None:
        self.argv, self.load, self.on_change = argv, load, on_change
        self.debounce, self.grace = debounce, grace
        self.child: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        try:
            self.child = subprocess.Popen(self.argv, env=env)
        except OSError as exc:
            click.echo(f"error: cannot run {self.argv[0]}: {exc.strerror}", err=True)
            sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)

    def forward(self, signum: int, _: Any) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self, watcher: Watcher) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self.forward)
        while True:
            assert self.child is not None
            code = self.child.poll()
            if code is not None:
                return code if code >= 0 else 128 - code
            try:
                watcher.changes.get(timeout=0.1)
            except queue.Empty:
                continue
            changed = 1 + self._settle(watcher.changes)
            self._react(changed)

    def _settle(self, changes: queue.Queue[str]) -> int:
        """More changes until none came for ``debounce`` seconds: how many."""
        more = 0
        while True:
            try:
                changes.get(timeout=self.debounce)
                more += 1
            except queue.Empty:
                return more

    def _react(self, changed: int) -> None:
        assert self.child is not None
        if self.on_change is not None:
            self.forward(self.on_change, None)
            click.echo(f"coffer: {changed} change(s): sent {self.on_change.name} to {self.argv[0]}", err=True)
            return
        try:
            env, loaded = self.load()
        except CofferError as exc:
            click.echo(f"coffer: {changed} change(s), but the secrets could not be read ({exc.code}): "
                       f"{self.argv[0]} keeps running", err=True)
            return
        self.child.terminate()
        try:
            self.child.wait(self.grace)
        except subprocess.TimeoutExpired:
            self.child.kill()
            self.child.wait()
        click.echo(f"coffer: {changed} change(s): restarting {self.argv[0]} with {loaded} secret(s)", err=True)
        self.start(env)


def run_watching(client: Client, bases: list[str], argv: list[str], load: Loader, on_change: signal.Signals | None,
                 debounce: float, grace: float) -> None:
    watcher = Watcher(client, bases)
    watcher.thread.start()
    if not watcher.connected.wait(15):
        click.echo("coffer: the event stream is not open yet; starting anyway", err=True)
    env, loaded = load()
    supervisor = Supervisor(argv, load, on_change, debounce, grace)
    click.echo(f"coffer: running {argv[0]} with {loaded} secret(s), watching {', '.join(bases) or 'every path'}",
               err=True)
    supervisor.start(env)
    sys.exit(supervisor.run(watcher))

