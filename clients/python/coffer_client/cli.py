"""``coffer``: log in once, read and write secrets, run a program with its secrets, get certificates and
database credentials — from the shell (README, "Use it from the shell", and clients/python/README.md).

Secrets, passwords and tokens are read from stdin or a prompt without echo,
never from the command line (where ``ps`` and shell history would keep them),
and never printed in an error. An error is a line on stderr,
``error: <code>: <message> (request <id>)``, then its details in words (which
field and why, which rule), indented; the exit status says which
kind: 2 usage, 3 authentication, 4 forbidden, 5 not found, 6 conflict or gone,
7 rate limited or quota, 8 unavailable or server error, 1 anything else.
"""

from __future__ import annotations

import sys

import click
from click.shell_completion import BashComplete, FishComplete, ZshComplete

from coffer_client import config
from coffer_client._cli_access import access
from coffer_client._cli_common import (
    NotLoggedIn,
    State,
    _ctx_state,
    _json,
    _mode,
    _only_stdin,
    _read_secret,
    _table,
    _when,
    env_name,
    error_lines,
    exit_code,
    output_option,
)
from coffer_client._cli_events import events
from coffer_client._cli_more import export, lease, pki
from coffer_client._cli_oidc import browser_login, device_login
from coffer_client._cli_secrets import run, secrets
from coffer_client.client import VERSION
from coffer_client.errors import CofferError

__all__ = ["cli", "env_name", "exit_code", "main"]


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
      coffer login --oidc sso --role people     (sign in through your OpenID provider in a browser)
      coffer login --oidc sso --role people --device   (… entering a code there, from any device)
      coffer secrets put app/db-password -      (the value from stdin)
      coffer secrets get app/db-password | psql …
      coffer secrets ls app/
      coffer run --prefix app/ -- ./server      (the secrets as environment variables)
      coffer access request prod-read --for 1h --reason "INC-1" --wait   (access for a while, approved)
      coffer run --watch --prefix app/ -- ./server   (restarted when one of them changes)
      coffer events tail --types 'secret.*'     (events as they happen)

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
@click.option("--oidc", "oidc_method", metavar="METHOD", help="sign in through this oidc auth method's provider")
@click.option("--role", help="the role of the --oidc method")
@click.option("--no-browser", is_flag=True, help="with --oidc: only print the URL to open")
@click.option("--device", is_flag=True,
              help="with --oidc: sign in by the provider's device authorization grant (RFC 8628): open its page on"
                   " any device and enter the code shown here")
@output_option
def login(client_id: str | None, client_secret: str | None, username: str | None, password: str | None,
          login_tenant: str | None, scopes: tuple[str, ...], oidc_method: str | None, role: str | None,
          no_browser: bool, device: bool, output: str | None) -> None:
    """Get a token and keep it for this profile (credentials.toml, mode 0600).

    A client secret or password is read from stdin or prompted for without echo, never taken from the
    command line, and never stored. When the account has a second factor the TOTP code is asked for
    next (the next stdin line when stdin is not a terminal).
    """
    state = _ctx_state()
    if sum(x is not None for x in (client_id, username, oidc_method)) != 1:
        raise click.UsageError("give --client-id, --username or --oidc")
    if (oidc_method is None) != (role is None):
        raise click.UsageError("--oidc METHOD goes with --role ROLE")
    if device and oidc_method is None:
        raise click.UsageError("--device goes with --oidc METHOD --role ROLE")
    _only_stdin(client_secret, "--client-secret")
    _only_stdin(password, "--password")
    client = state.client(token=False)
    if oidc_method is not None:
        assert role is not None
        (device_login if device else browser_login)(client, oidc_method, role, open_browser=not no_browser)
    elif client_id is not None:
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


for command in (secrets, run, events, pki, lease, export, access):
    cli.add_command(command)


# -- completion -------------------------------------------------------------------------------------------

@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print a completion script: eval "$(coffer completion bash)" (or put it where your shell looks)."""
    kind = {"bash": BashComplete, "zsh": ZshComplete, "fish": FishComplete}[shell]
    click.echo(kind(cli, {}, "coffer", "_COFFER_COMPLETE").source())


# -- entry point -------------------------------------------------------------------------------------------

def _fail(exc: CofferError) -> int:
    for line in error_lines(exc, config.token_source()):
        click.echo(line, err=True)
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
    except NotLoggedIn as exc:
        for line in exc.lines():
            click.echo(line, err=True)
        sys.exit(exit_code(401))
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
