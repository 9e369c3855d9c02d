"""``coffer access …``: ask for a requestable policy for a while, approve or deny others' requests, end a
grant early (api.md, "Access requests")."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from coffer_client._cli_common import _ctx_state, _json, _mode, _table, _when, output_option

#: how often ``request --wait`` asks how the request stands
POLL_SECONDS = 0.5


@click.group()
def access() -> None:
    """Just-in-time access: a policy for a while, once colleagues approved; it ends by itself.

    \b
      coffer access request prod-read --for 1h --reason "INC-4411" --wait
      coffer access ls --status pending          (what waits for you to decide)
      coffer access approve acr_… --comment "ok for the incident"
    """


def _approvals(item: dict[str, Any]) -> str:
    return f"{len(item['approvals'])}/{item['approvals_required']}"


def _said(item: dict[str, Any]) -> str:
    """Who decided and what they said, in words."""
    comment = f': "{item["comment"]}"' if item.get("comment") else ""
    return f"by {item['decided_by']}{comment}" if item.get("decided_by") else ""


def _outcome(item: dict[str, Any]) -> str:
    """One line: where the request stands."""
    status, head = item["status"], f"{item['id']} ({item['policy']} for {item['duration']})"
    if status == "approved":
        return f"approved {head} {_said(item)}: granted until {_when(item['expires_at'])} UTC " \
               f"(binding {item['binding_id']})"
    if status == "pending":
        return f"pending {head}: {_approvals(item)} approvals"
    return f"{status} {head} {_said(item)}".rstrip()


@access.command("request")
@click.argument("policy")
@click.option("--for", "duration", required=True, metavar="DURATION", help="how long: 30m, 1h, 8h …")
@click.option("--reason", required=True, help="why, for the approvers (1–1000 characters)")
@click.option("--wait", is_flag=True, help="wait for the decision, showing each approval")
@click.option("--timeout", type=float, default=86400.0, show_default=True, help="seconds --wait waits at most")
@output_option
def access_request(policy: str, duration: str, reason: str, wait: bool, timeout: float, output: str | None) -> None:
    """Ask for POLICY for a while (exit 0 once granted with --wait; 4 denied; 6 cancelled or expired)."""
    client = _ctx_state().client()
    item = client.request_access(policy, duration, reason)
    click.echo(f"requested {item['id']}: {policy} for {duration}, {item['approvals_required']} approval(s) "
               f"needed", err=True)
    if wait:
        deadline, shown = time.monotonic() + timeout, _approvals(item)
        click.echo(f"  waiting for approval ({shown})…", err=True)
        while item["status"] == "pending":
            if time.monotonic() > deadline:
                raise click.ClickException(f"{item['id']} is still pending after {timeout:.0f} s: "
                                           f"coffer access ls shows it")
            time.sleep(POLL_SECONDS)
            item = client.get_access_request(item["id"])
            if _approvals(item) != shown and item["status"] == "pending":
                shown = _approvals(item)
                click.echo(f"  {shown} approvals (latest by {item['approvals'][-1]['identity_id']})", err=True)
    if _mode(output) == "json":
        _json(item)
    else:
        click.echo(_outcome(item))
    if item["status"] in ("denied",):
        sys.exit(4)
    if item["status"] in ("cancelled", "revoked", "expired"):
        sys.exit(6)


@access.command("ls")
@click.option("--status", type=click.Choice(["pending", "approved", "denied", "cancelled", "revoked", "expired"]))
@click.option("--policy", help="only this policy's")
@click.option("--mine", is_flag=True, help="only the requests you made")
@output_option
def access_ls(status: str | None, policy: str | None, mine: bool, output: str | None) -> None:
    """The requests you may see: yours, and those of policies you may approve (every page)."""
    client = _ctx_state().client()
    requester = client.whoami()["identity"]["id"] if mine else None
    items = list(client.list_access_requests(status=status, requester=requester, policy=policy))
    if _mode(output) == "json":
        _json(items)
        return
    _table(["request", "status", "policy", "for", "requester", "approvals", "reason", "ends (UTC)"],
           ([x["id"], x["status"], x["policy"], x["duration"], x["requester"], _approvals(x), x["reason"],
             _when(x["expires_at"])] for x in items))


@access.command("show")
@click.argument("request_id")
@output_option
def access_show(request_id: str, output: str | None) -> None:
    """One request."""
    item = _ctx_state().client().get_access_request(request_id)
    if _mode(output) == "json":
        _json(item)
    else:
        click.echo(_outcome(item))


def _decision(action: str, doc: str) -> None:
    @access.command(action, help=doc)
    @click.argument("request_id")
    @click.option("--comment", help="kept with the decision and in the audit log")
    @output_option
    def command(request_id: str, comment: str | None, output: str | None) -> None:
        client = _ctx_state().client()
        item = getattr(client, f"{action}_access")(request_id, comment)
        if _mode(output) == "json":
            _json(item)
        else:
            click.echo(_outcome(item))


for _action, _doc in (("approve", "Approve a request (the last approval needed grants it)."),
                      ("deny", "Deny a request."),
                      ("cancel", "Cancel your own request, or end your grant now."),
                      ("revoke", "End someone's grant now (an approver).")):
    _decision(_action, _doc)
