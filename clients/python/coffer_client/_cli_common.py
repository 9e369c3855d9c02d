"""What every ``coffer`` command shares: exit codes, where and as whom it acts, reading secrets without
echoing them, and printing tables or JSON."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from coffer_client import config
from coffer_client.client import Client
from coffer_client.models import as_dict

SECRET_TYPES = ("generic", "password", "api_key", "token", "certificate", "private_key", "ssh_key",
                "connection_string", "json")


def exit_code(status: int) -> int:
    """The exit status for an API error of HTTP ``status`` (0: the platform could not be reached)."""
    if status == 401:
        return 3
    if status == 403:
        return 4
    if status == 404:
        return 5
    if status in (409, 410):
        return 6
    if status == 429:
        return 7
    if status == 0 or status >= 500:
        return 8
    return 1


def env_name(path: str, prefix: str) -> str:
    """A secret's environment variable name under ``prefix``: the rest of its path, upper-cased, every
    character but ``A-Z0-9`` turned into ``_`` (as the dotenv export names keys); a path that is the whole
    prefix is named by its last segment."""
    rest = path[len(prefix):] if path.startswith(prefix) else path
    rest = rest.strip("/") or path.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Z0-9]", "_", rest.upper())


class State:
    """What every command knows: where, as whom, and how to answer."""

    def __init__(self, profile: str | None, addr: str | None, tenant: str | None, retry: bool) -> None:
        self.settings = config.resolve(profile, addr, tenant)
        self.retries = 2 if retry else 0
        self._client: Client | None = None

    def client(self, *, token: bool = True) -> Client:
        if self._client is None:
            self._client = Client(self.settings.addr, (self.settings.token or "") if token else "",
                                  tenant=self.settings.tenant or "", retries=self.retries)
        return self._client


def output_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """``-o table|json`` (tables by default on a terminal, JSON otherwise)."""
    return click.option("-o", "--output", type=click.Choice(["table", "json"]), default=None,
                        help="table (default on a terminal) or json (the API's objects, for jq)")(command)


def _mode(output: str | None) -> str:
    return output or ("table" if sys.stdout.isatty() else "json")


def _json(data: Any) -> None:
    click.echo(json.dumps(as_dict(data), indent=2, ensure_ascii=False))


def _table(columns: list[str], rows: Iterable[Iterable[Any]], title: str | None = None) -> None:
    table = Table(*columns, title=title, show_lines=False, header_style="bold")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    # on a terminal, its width; piped, never wrapped (a line per row, for grep and awk)
    Console(width=None if sys.stdout.isatty() else 4096).print(table)


def _when(value: Any) -> str:
    text = as_dict(value)
    return str(text)[:19].replace("T", " ") if text else ""


def _read_secret(label: str, from_stdin: bool) -> str:
    """A secret from stdin's next line, or a prompt without echo: never from argv."""
    if from_stdin or not sys.stdin.isatty():
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise click.UsageError(f"expected the {label} on stdin")
        return value
    return str(click.prompt(label.capitalize(), hide_input=True))


def _only_stdin(value: str | None, option: str) -> None:
    if value not in (None, "-"):
        raise click.UsageError(f"{option} takes only '-' (read it from stdin): a secret on the command line "
                               "is visible to other users (ps) and stays in shell history")


def _ctx_state() -> State:
    return click.get_current_context().find_object(State)  # type: ignore[return-value]


def _write(path: Path, text: str | bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode() if isinstance(text, str) else text)
    finally:
        os.close(fd)
