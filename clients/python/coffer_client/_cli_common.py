"""What every ``coffer`` command shares: exit codes, where and as whom it acts, reading secrets without
echoing them, and printing tables or JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from coffer_client import config
from coffer_client.client import Client
from coffer_client.errors import CofferError
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


#: at most this many lines of details under an error, each at most this long
_DETAIL_LINES, _DETAIL_WIDTH = 12, 200


class NotLoggedIn(Exception):
    """A command that needs a token, and none is set or stored for the profile."""

    def __init__(self, profile: str, addr: str) -> None:
        super().__init__(f"not logged in: profile {profile} has no token for {addr}")
        self.profile, self.addr = profile, addr

    def lines(self) -> list[str]:
        option = "" if self.profile == "default" else f" --profile {self.profile}"
        return [f"error: not logged in to {self.addr} (profile {self.profile}): "
                f"run `coffer{option} login --client-id ID` (or `--username NAME`), or set COFFER_TOKEN"]


def _in_words(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    else:
        text = str(value)
    return text if len(text) <= _DETAIL_WIDTH else text[:_DETAIL_WIDTH - 1] + "…"


def error_lines(exc: CofferError, token_source: str | None = None) -> list[str]:
    """An API error for stderr: ``error: <code>: <message> (request <id>)``, then its details in words
    (which field and why, which rule, which limit) and, for a refused token, what to do about it.

    Details are the server's, which never hold a value, password or token."""
    where = f" (request {exc.request_id})" if exc.request_id else ""
    lines = [f"error: {exc.code or 'unreachable'}: {exc.message}{where}"]
    details = dict(exc.details)
    for item in details.pop("fields", None) or []:
        if isinstance(item, dict):
            lines.append(f"  {_in_words(item.get('field') or 'body')}: {_in_words(item.get('message') or '')}")
    for key, value in details.items():
        if value in (None, "", [], {}) or value == exc.message:
            continue
        lines.append(f"  {key.replace('_', ' ')}: {_in_words(value)}")
    lines = lines[:_DETAIL_LINES + 1]
    if exc.status == 401 and exc.code.startswith("token_"):
        lines.append("  COFFER_TOKEN holds a token Coffer refuses: set a new one, or unset it to use the one "
                     "`coffer login` stores" if token_source == "env" else
                     "  run `coffer login` for a new token")
    return lines


class State:
    """What every command knows: where, as whom, and how to answer."""

    def __init__(self, profile: str | None, addr: str | None, tenant: str | None, retry: bool) -> None:
        self.settings = config.resolve(profile, addr, tenant)
        self.retries = 2 if retry else 0
        self._client: Client | None = None

    def client(self, *, token: bool = True) -> Client:
        """The client, with the profile's token (``token=False``: without one, to log in or ask health)."""
        if token and not self.settings.token:
            raise NotLoggedIn(self.settings.profile, self.settings.addr)
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


def _terminal_width() -> int | None:
    """The width to fit: the terminal's (or ``COLUMNS``); None when piped, where a row is one line, for grep
    and awk."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return shutil.get_terminal_size().columns
    return None


def fit_widths(natural: list[int], floors: list[int], budget: int, keep: int, least: int = 3) -> list[int]:
    """Column widths that fit ``budget``. The other columns give way first: down to their ``floors`` (their
    longest word: they wrap between words), then to ``least`` (words fold); column ``keep`` (the path, the
    id) only after them, down to its own floor."""
    widths = list(natural)
    excess = sum(widths) - budget
    for stop in (floors, [min(f, least) for f in floors]):
        while excess > 0:
            room = [(widths[i] - stop[i], i) for i in range(len(widths)) if i != keep and widths[i] > stop[i]]
            if not room:
                break
            widths[max(room)[1]] -= 1
            excess -= 1
    if excess > 0:
        widths[keep] = max(floors[keep], widths[keep] - excess)
    return widths


def _table(columns: list[str], rows: Iterable[Iterable[Any]], title: str | None = None, *, keep: int = 0) -> None:
    """A table on stdout that fits the terminal; column ``keep`` (the path, the id: what a row is about)
    is the last to be narrowed, and then it folds rather than losing characters."""
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    width = _terminal_width()
    if width is None:
        widths: list[int | None] = [None] * len(columns)
    else:
        texts = [[header, *(row[i] for row in cells)] for i, header in enumerate(columns)]
        natural = [max(cell_len(t) for t in column) for column in texts]
        # the others wrap between words; the kept column folds, but keeps a dozen characters
        floors = [min(natural[i], 12) if i == keep else
                  max(1, min(natural[i], max(cell_len(w) for t in texts[i] for w in (t.split() or [""]))))
                  for i in range(len(columns))]
        frame = 3 * len(columns) + 1  # a border between and around the columns, a space each side of a cell
        widths = list(fit_widths(natural, floors, width - frame, keep))
    table = Table(title=title, show_lines=False, header_style="bold")
    for i, header in enumerate(columns):
        table.add_column(header, width=widths[i], overflow="fold")
    for row in cells:
        table.add_row(*row)
    Console(width=width or 4096).print(table)


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
