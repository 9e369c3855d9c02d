"""``coffer secrets …`` and ``coffer run``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any

import click

from coffer_client._cli_common import (
    SECRET_TYPES,
    _ctx_state,
    _json,
    _mode,
    _table,
    _when,
    env_name,
    output_option,
)
from coffer_client._cli_events import parse_on_change, run_watching

# -- secrets ------------------------------------------------------------------------------------------

@click.group()
def secrets() -> None:
    """Read, write, list and delete secrets."""


@secrets.command("get")
@click.argument("path")
@click.option("--version", type=int, help="a given version (default: the latest)")
@click.option("--field", help="one key of a json secret")
@output_option
def secrets_get(path: str, version: int | None, field: str | None, output: str | None) -> None:
    """Print a secret's value alone (pipe-friendly; a json secret as JSON).

    No newline is added when stdout is not a terminal: the bytes are the value's.
    """
    secret = _ctx_state().client().get_secret(path, version)
    if output == "json":
        _json(secret)
        return
    value = secret.value
    if field is not None:
        if not isinstance(value, dict) or field not in value:
            raise click.UsageError(f"the secret has no field '{field}' (only json secrets have fields)")
        value = value[field]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    click.echo(text, nl=sys.stdout.isatty())


@secrets.command("put")
@click.argument("path")
@click.argument("value", required=False)
@click.option("--type", "secret_type", type=click.Choice(SECRET_TYPES), help="the secret's type [generic]")
@click.option("--ttl", help="expires after this long (90s, 12h, 30d)")
@click.option("--meta", multiple=True, metavar="K=V", help="metadata (repeatable)")
@click.option("--cas", type=int, help="write only if this is the current version (0: only if new)")
@output_option
def secrets_put(path: str, value: str | None, secret_type: str | None, ttl: str | None, meta: tuple[str, ...],
                cas: int | None, output: str | None) -> None:
    """Write a new version. VALUE '-' or left out: read it from stdin (one trailing newline dropped)."""
    if value is None or value == "-":
        value = sys.stdin.read()
        value = value[:-1] if value.endswith("\n") else value
    metadata = {}
    for pair in meta:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--meta takes K=V, not '{pair[:40]}'")
        metadata[key] = val
    payload: Any = value
    if secret_type == "json":
        try:
            payload = json.loads(value)
        except ValueError:
            raise click.UsageError("a json secret's value must be a JSON object") from None
    written = _ctx_state().client().put_secret(path, payload, secret_type=secret_type, metadata=metadata or None,
                                               ttl=ttl, expected_version=cas)
    if _mode(output) == "json":
        _json(written)
    else:
        click.echo(f"wrote {written.path} version {written.version}")


def _secret_rows(items: Iterable[Any]) -> Iterable[list[Any]]:
    for m in items:
        yield [m.path, m.version, m.secret_type, _when(m.updated_at), _when(m.expires_at)]


@secrets.command("ls")
@click.argument("prefix", required=False, default="")
@output_option
def secrets_ls(prefix: str, output: str | None) -> None:
    """Every secret under PREFIX you may list (every page), in path order."""
    items = list(_ctx_state().client().list_secrets(prefix))
    if _mode(output) == "json":
        _json(items)
    else:
        _table(["path", "version", "type", "updated (UTC)", "expires (UTC)"], _secret_rows(items))


@secrets.command("versions")
@click.argument("path")
@output_option
def secrets_versions(path: str, output: str | None) -> None:
    """A secret's versions, newest first (every page)."""
    items = list(_ctx_state().client().versions(path))
    if _mode(output) == "json":
        _json(items)
    else:
        _table(["version", "type", "created (UTC)", "created by", "expires (UTC)"],
               ([m.version, m.secret_type, _when(m.created_at), m.created_by, _when(m.expires_at)] for m in items))


@secrets.command("rm")
@click.argument("path")
@output_option
def secrets_rm(path: str, output: str | None) -> None:
    """Soft-delete a secret (restorable until its retention ends)."""
    _ctx_state().client().delete_secret(path)
    click.echo(f"deleted {path} (coffer secrets restore {path} brings it back until it is purged)")


@secrets.command("restore")
@click.argument("path")
@output_option
def secrets_restore(path: str, output: str | None) -> None:
    """Undo a soft delete."""
    restored = _ctx_state().client().restore_secret(path)
    if _mode(output) == "json":
        _json(restored)
    else:
        click.echo(f"restored {restored.path} version {restored.version}")


@secrets.command("rotate")
@click.argument("path")
@output_option
def secrets_rotate(path: str, output: str | None) -> None:
    """Give a secret a new generated value now, from its rotation policy (the value is not printed)."""
    rotated = _ctx_state().client().rotate_secret(path)
    if _mode(output) == "json":
        _json(rotated)
    else:
        click.echo(f"rotated {rotated.path}: version {rotated.version} (coffer secrets get {rotated.path} shows it)")


@secrets.command("purge")
@click.argument("path")
@click.option("--yes", is_flag=True, help="do not ask")
@output_option
def secrets_purge(path: str, yes: bool, output: str | None) -> None:
    """Destroy every version of a secret now (asks first on a terminal)."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Destroy every version of {path}? This can't be undone", abort=True)
    _ctx_state().client().purge_secret(path)
    click.echo(f"purged {path}")


# -- run ------------------------------------------------------------------------------------------------

@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--prefix", "prefixes", multiple=True, required=True,
              help="secrets under this prefix become variables (repeatable; a later prefix wins)")
@click.option("--watch", is_flag=True, help="restart COMMAND when a secret under a prefix changes")
@click.option("--on-change", default="restart", show_default=True, metavar="restart|signal:NAME",
              help="with --watch: restart, or send a signal instead (signal:HUP)")
@click.option("--debounce", type=click.FloatRange(0, 60), default=0.5, show_default=True,
              help="with --watch: seconds without further change before acting (a burst is one restart)")
@click.option("--grace", type=click.FloatRange(0, 600), default=10.0, show_default=True,
              help="with --watch: seconds between SIGTERM and SIGKILL on a restart")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(prefixes: tuple[str, ...], watch: bool, on_change: str, debounce: float, grace: float,
        command: tuple[str, ...]) -> None:
    """Run COMMAND with the secrets under each PREFIX in its environment.

    \b
      coffer run --prefix app/prod/ -- ./server --port 8080
      coffer run --watch --prefix app/prod/ -- ./server          (restarted when a secret changes)
      coffer run --watch --on-change signal:HUP --prefix app/ -- nginx -g 'daemon off;'
    app/prod/db/password becomes DB_PASSWORD: the path below the prefix, upper-cased, every character
    but A-Z and 0-9 turned into _. COMMAND replaces coffer (exec): its exit status is coffer's and
    signals reach it directly. With --watch coffer stays its parent, follows the event stream (scope
    events), passes signals on, and exits with its status. Values are never printed; COFFER_TOKEN is not
    passed on.
    """
    client = _ctx_state().client()
    bases = [prefix.strip("/") + "/" if prefix.strip("/") else "" for prefix in prefixes]

    def load() -> tuple[dict[str, str], int]:
        env = {k: v for k, v in os.environ.items() if k != "COFFER_TOKEN"}
        loaded = 0
        for base in bases:
            for meta in client.list_secrets(base):
                secret = client.get_secret(meta.path)
                value = secret.value if isinstance(secret.value, str) else json.dumps(secret.value)
                name = env_name(meta.path, base)
                if name:
                    env[name] = value
                    loaded += 1
        return env, loaded

    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        raise click.UsageError("give the command to run after --")
    if not watch and (on_change != "restart" or debounce != 0.5 or grace != 10.0):
        raise click.UsageError("--on-change, --debounce and --grace go with --watch")
    if watch:
        run_watching(client, bases, argv, load, parse_on_change(on_change), debounce, grace)
        return
    env, loaded = load()
    click.echo(f"coffer: running {argv[0]} with {loaded} secret(s) from {', '.join(prefixes)}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        click.echo(f"error: cannot run {argv[0]}: {exc.strerror}", err=True)
        sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)
