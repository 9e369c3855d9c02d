"""``coffer pki issue``, ``coffer lease …`` and ``coffer export``."""

from __future__ import annotations

import time
from pathlib import Path

import click

from coffer_client._age import RecipientError, recipient_from
from coffer_client._cli_common import _ctx_state, _json, _mode, _table, _when, _write, output_option

# -- PKI --------------------------------------------------------------------------------------------------

@click.group()
def pki() -> None:
    """Certificates from the PKI."""


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

@click.group()
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


# -- export -----------------------------------------------------------------------------------------------

@click.command("export")
@click.option("--prefix", required=True, help="the secrets under this prefix (those you may read)")
@click.option("--format", "fmt", type=click.Choice(["dotenv", "json"]), required=True)
@click.option("--recipient", required=True, metavar="RECIPIENT|FILE",
              help="an age recipient (age1…) or ssh-ed25519 public key; or a file holding one (comments allowed), "
                   "or the key file age-keygen -o wrote (its public key is used)")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="where to save the bundle (age format)")
@click.option("--wait", type=float, default=600.0, show_default=True, help="seconds to wait for the bundle")
def export(prefix: str, fmt: str, recipient: str, out: Path, wait: float) -> None:
    """Export secrets as an age-encrypted bundle: starts the export, shows its progress, saves the bundle."""
    try:
        recipient = recipient_from(recipient)
    except RecipientError as exc:
        raise click.BadParameter(str(exc), param_hint="--recipient") from None
    client = _ctx_state().client()
    job = client.create_export(prefix, fmt, recipient)
    click.echo(f"export {job['id']} started: {job['count']} secrets under '{prefix}'", err=True)
    deadline, shown = time.monotonic() + wait, None
    while job["status"] == "pending":
        if time.monotonic() > deadline:
            raise click.ClickException(f"export {job['id']} is still pending after {wait:.0f} s; "
                                       f"ask again later with its id")
        progress = f"{job['done']}/{job['count']}"
        if progress != shown:
            click.echo(f"  {progress} secrets", err=True)
            shown = progress
        time.sleep(0.5)
        job = client.get_export(job["id"])
    if job["status"] != "ready":
        raise click.ClickException(f"export {job['id']} failed: {job.get('error') or 'unknown error'}")
    bundle = client.export_bundle(job["id"])
    _write(out, bundle, 0o600)
    click.echo(f"wrote {out}: {job['count']} secrets, {len(bundle)} bytes (age -d -i KEY {out} opens it)")

