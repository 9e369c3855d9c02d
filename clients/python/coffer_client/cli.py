"""``coffer``: log in once, read and write secrets, run a program with its secrets, get certificates and
database credentials — from the shell (contract: Coffer's ``docs/cli.md``).

Secrets, passwords and tokens are read from stdin or a prompt without echo,
never from the command line (where ``ps`` and shell history would keep them),
and never printed in an error. Errors are one line on stderr,
``error: <code>: <message> (request <id>)``, and the exit status says which
kind: 2 usage, 3 authentication, 4 forbidden, 5 not found, 6 conflict or gone,
7 rate limited or quota, 8 unavailable or server error, 1 anything else.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click
from click.shell_completion import BashComplete, FishComplete, ZshComplete
from rich.console import Console
from rich.table import Table

from coffer_client import config
from coffer_client.client import VERSION, Client
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
    character but ``A-Z0-9`` turned into ``_`` (as the dotenv export names keys)."""
    rest = path[len(prefix):] if path.startswith(prefix) else path
    return re.sub(r"[^A-Z0-9]", "_", rest.strip("/").upper())


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


# -- the group --------------------------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--profile", envvar="COFFER_PROFILE", help="profile of config.toml / credentials.toml [default]")
@click.option("--addr", help="Coffer's address [COFFER_ADDR, or the profile's, or http://127.0.0.1:8700]")
@click.option("--tenant", help="act in this tenant (X-Tenant-ID) [COFFER_TENANT, or the profile's]")
@click.option("--no-retry", is_flag=True, help="do not retry a 429 or 503 after its Retry-After")
@click.version_option(VERSION, prog_name="coffer")
@click.pass_context
def cli(ctx: click.Context, profile: str | None, addr: str | None, tenant: str | None, no_retry: bool) -> None:
    """Coffer from the shell: secrets, certificates and database credentials.

    \b
    Log in once, then:
      coffer login --client-id cli_…            (the secret from stdin or a prompt)
      coffer secrets put app/db-password -      (the value from stdin)
      coffer secrets get app/db-password | psql …
      coffer secrets ls app/
      coffer run --prefix app/ -- ./server      (the secrets as environment variables)

    Configuration: flags, then COFFER_ADDR / COFFER_TOKEN / COFFER_TENANT / COFFER_PROFILE, then
    $XDG_CONFIG_HOME/coffer/config.toml (profiles) and credentials.toml (the token login stored).
    """
    ctx.obj = State(profile, addr, tenant, not no_retry)


# -- login, whoami, status ------------------------------------------------------------------------------

@cli.command()
@click.option("--client-id", help="a service identity's client id")
@click.option("--client-secret", metavar="-", help="'-': read the client secret from stdin (else a prompt)")
@click.option("--username", help="a user's name")
@click.option("--password", metavar="-", help="'-': read the password from stdin (else a prompt)")
@click.option("--login-tenant", help="the user's tenant id (left out: the root tenant)")
@click.option("--scope", "scopes", multiple=True, help="ask for fewer scopes than the identity has")
@output_option
def login(client_id: str | None, client_secret: str | None, username: str | None, password: str | None,
          login_tenant: str | None, scopes: tuple[str, ...], output: str | None) -> None:
    """Get a token and keep it for this profile (credentials.toml, mode 0600).

    A client secret or password is read from stdin or prompted for without echo, never taken from the
    command line, and never stored. When the account has a second factor the TOTP code is asked for
    next (the next stdin line when stdin is not a terminal).
    """
    state = _ctx_state()
    if (client_id is None) == (username is None):
        raise click.UsageError("give --client-id or --username")
    _only_stdin(client_secret, "--client-secret")
    _only_stdin(password, "--password")
    client = state.client(token=False)
    if client_id is not None:
        secret = _read_secret("client secret", client_secret == "-")
        client.login_client(client_id, secret, list(scopes) or None)
    else:
        assert username is not None
        secret = _read_secret("password", password == "-")
        client.login_password(username, secret, tenant_id=login_tenant, scopes=list(scopes) or None)
    me = client.whoami()
    if me["identity"].get("mfa_enrolled"):
        if sys.stdin.isatty():
            code = str(click.prompt("TOTP code", hide_input=False)).strip()
        else:
            code = sys.stdin.readline().strip()
        client.step_up(code)
        me = client.whoami()
    assert client.token is not None
    path = config.store_token(state.settings.profile, state.settings.addr, client.token, me.get("expires_at"))
    if _mode(output) == "json":
        _json(me)
        return
    who, tenant = me["identity"], me["tenant"]
    click.echo(f"Logged in to {state.settings.addr} as {who['name']} ({who['kind']}, {who['id']}) in tenant "
               f"{tenant['name']} ({tenant['id']}); token valid until {_when(me['expires_at'])} UTC, "
               f"saved to {path} (profile {state.settings.profile})")


@cli.command()
@output_option
def logout(output: str | None) -> None:
    """Revoke this profile's stored token and forget it."""
    state = _ctx_state()
    if state.settings.token_source == "file":
        try:
            state.client().revoke_token()
        except CofferError as exc:
            if exc.status not in (401,):
                raise
    forgotten = config.forget_token(state.settings.profile)
    click.echo(f"logged out of profile {state.settings.profile}" if forgotten else
               f"profile {state.settings.profile} had no stored token")


@cli.command()
@output_option
def whoami(output: str | None) -> None:
    """The identity, tenant and scopes of the token in use."""
    me = _ctx_state().client().whoami()
    if _mode(output) == "json":
        _json(me)
        return
    who, tenant = me["identity"], me["tenant"]
    _table(["identity", "kind", "tenant", "scopes", "token expires (UTC)", "mfa"], [[
        f"{who['name']} ({who['id']})", who["kind"], f"{tenant['name']} ({tenant['id']})", " ".join(me["scopes"]),
        _when(me["expires_at"]), "yes" if me.get("mfa_at") else ("enrolled" if who.get("mfa_enrolled") else "no")]])


@cli.command()
@output_option
def status(output: str | None) -> None:
    """The platform's health: every service pinged (exit 8 when one is unavailable)."""
    state = _ctx_state()
    health = state.client(token=False).health()
    if _mode(output) == "json":
        _json(health)
    else:
        _table(["service", "status"], sorted(health.get("services", {}).items()),
               title=f"{state.settings.addr}: {health.get('status')}")
    if health.get("status") != "ok":
        sys.exit(8)


# -- secrets ------------------------------------------------------------------------------------------

@cli.group()
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

@cli.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--prefix", "prefixes", multiple=True, required=True,
              help="secrets under this prefix become variables (repeatable; a later prefix wins)")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(prefixes: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Run COMMAND with the secrets under each PREFIX in its environment.

    \b
      coffer run --prefix app/prod/ -- ./server --port 8080
    app/prod/db/password becomes DB_PASSWORD: the path below the prefix, upper-cased, every character
    but A-Z and 0-9 turned into _. COMMAND replaces coffer (exec): its exit status is coffer's and
    signals reach it directly. Values are never printed; COFFER_TOKEN is not passed on.
    """
    client = _ctx_state().client()
    env = {k: v for k, v in os.environ.items() if k != "COFFER_TOKEN"}
    loaded = 0
    for prefix in prefixes:
        base = prefix.strip("/") + "/" if prefix.strip("/") else ""
        for meta in client.list_secrets(base):
            secret = client.get_secret(meta.path)
            value = secret.value if isinstance(secret.value, str) else json.dumps(secret.value)
            name = env_name(meta.path, base)
            if name:
                env[name] = value
                loaded += 1
    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        raise click.UsageError("give the command to run after --")
    click.echo(f"coffer: running {argv[0]} with {loaded} secret(s) from {', '.join(prefixes)}", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        click.echo(f"error: cannot run {argv[0]}: {exc.strerror}", err=True)
        sys.exit(127 if isinstance(exc, FileNotFoundError) else 126)


# -- PKI --------------------------------------------------------------------------------------------------

@cli.group()
def pki() -> None:
    """Certificates from the PKI."""


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@pki.command("issue")
@click.argument("role")
@click.argument("common_name")
@click.option("--san", "sans", multiple=True, help="another DNS name (repeatable)")
@click.option("--ip", "ips", multiple=True, help="an IP address SAN (repeatable)")
@click.option("--ttl", help="lifetime (default: the role's)")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="directory for cert.pem, chain.pem and key.pem")
@output_option
def pki_issue(role: str, common_name: str, sans: tuple[str, ...], ips: tuple[str, ...], ttl: str | None, out: Path,
              output: str | None) -> None:
    """Issue a certificate and its key: writes cert.pem, chain.pem and key.pem (mode 0600)."""
    issued = _ctx_state().client().issue_certificate(role, common_name, alt_names=list(sans) or None,
                                                     ip_sans=list(ips) or None, ttl=ttl)
    out.mkdir(parents=True, exist_ok=True)
    _write(out / "cert.pem", issued.certificate, 0o644)
    _write(out / "chain.pem", "".join(issued.chain), 0o644)
    _write(out / "key.pem", issued.private_key, 0o600)
    if _mode(output) == "json":
        _json({"serial": issued.serial, "ca_id": issued.ca_id, "expires_at": issued.expires_at,
               "files": [str(out / n) for n in ("cert.pem", "chain.pem", "key.pem")]})
    else:
        click.echo(f"wrote {out}/cert.pem, chain.pem and key.pem (0600): serial {issued.serial}, "
                   f"expires {_when(issued.expires_at)} UTC")


# -- leases ---------------------------------------------------------------------------------------------

@cli.group()
def lease() -> None:
    """Dynamic credentials: users made on demand in PostgreSQL, RabbitMQ and Redis."""


@lease.command("creds")
@click.argument("engine")
@click.argument("role")
@click.option("--ttl", help="the lease's duration (default: the role's)")
@output_option
def lease_creds(engine: str, role: str, ttl: str | None, output: str | None) -> None:
    """New credentials from ENGINE's ROLE (the password is shown here only)."""
    creds = _ctx_state().client().lease_credentials(engine, role, ttl)
    if _mode(output) == "json":
        _json(creds)
    else:
        _table(["lease", "username", "password", "expires (UTC)", "renewable"],
               [[creds.lease_id, creds.data.get("username"), creds.data.get("password"), _when(creds.expires_at),
                 "yes" if creds.renewable else "no"]])


@lease.command("ls")
@click.option("--engine", help="only this engine's")
@click.option("--role", help="only this role's")
@output_option
def lease_ls(engine: str | None, role: str | None, output: str | None) -> None:
    """Leases (every page)."""
    items = list(_ctx_state().client().list_leases(engine=engine, role=role))
    if _mode(output) == "json":
        _json(items)
    else:
        _table(["lease", "engine", "role", "status", "expires (UTC)", "max (UTC)"],
               ([x.id, x.engine, x.role, x.status, _when(x.expires_at), _when(x.max_expires_at)] for x in items))


@lease.command("renew")
@click.argument("lease_id")
@click.option("--increment", help="extend by this long (default: the role's default_ttl)")
@output_option
def lease_renew(lease_id: str, increment: str | None, output: str | None) -> None:
    """Extend a lease (up to its max_expires_at)."""
    renewed = _ctx_state().client().renew_lease(lease_id, increment)
    if _mode(output) == "json":
        _json(renewed)
    else:
        click.echo(f"renewed {renewed.id} until {_when(renewed.expires_at)} UTC")


@lease.command("revoke")
@click.argument("lease_id")
@output_option
def lease_revoke(lease_id: str, output: str | None) -> None:
    """Revoke a lease: its user removed from the target, its sessions ended."""
    _ctx_state().client().revoke_lease(lease_id)
    click.echo(f"revoked {lease_id}")


# -- completion -------------------------------------------------------------------------------------------

@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print a completion script: eval "$(coffer completion bash)" (or put it where your shell looks)."""
    kind = {"bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}[shell]
    click.echo(kind(cli, {}, "coffer", "_COFFER_COMPLETE").source())


# -- entry point -------------------------------------------------------------------------------------------

def _fail(exc: CofferError) -> int:
    where = f" (request {exc.request_id})" if exc.request_id else ""
    click.echo(f"error: {exc.code or 'unreachable'}: {exc.message}{where}", err=True)
    return exit_code(exc.status)


def main(argv: list[str] | None = None) -> None:
    """The ``coffer`` console script."""
    try:
        result = cli.main(args=argv, prog_name="coffer", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except CofferError as exc:
        sys.exit(_fail(exc))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
