"""``coffer login --oidc METHOD --role ROLE``: a person signs in through the ``oidc`` method's provider in a
browser (api.md §10). The CLI is a native app (RFC 8252): it listens on ``http://127.0.0.1:<random
port>/callback``, makes a PKCE verifier and its S256 challenge and a state, opens the browser at Coffer's
``authorize`` URL (and prints it, for when no browser opens), waits for the provider to send the browser
back, checks the state and trades the code for a Coffer token at ``callback``.

With ``--device`` (the provider's device authorization grant, RFC 8628: for a terminal whose machine has no
browser, an SSH session) the CLI prints the provider's verification URI and a user code to enter there from
any device, and polls Coffer until the person has signed in: every ``interval`` seconds, 5 s longer after
each ``slow_down``, until the code expires."""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import threading
import time
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click

from coffer_client.client import Client
from coffer_client.errors import AuthenticationError

PAGE = (b"<!doctype html><title>Coffer</title><p>Signed in to Coffer: you can close this window and go back"
        b" to the terminal.</p>")


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (RFC 7636: 43-128 unreserved characters) and its S256 challenge."""
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Listener(HTTPServer):
    """The loopback redirect's listener: the first ``GET /callback`` query it gets."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.query: dict[str, str] | None = None
        self.arrived = threading.Event()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/callback"


class _Handler(BaseHTTPRequestHandler):
    server: _Listener

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        if url.path != "/callback" or self.server.query is not None:
            self.send_error(404)
            return
        self.server.query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)
        self.server.arrived.set()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the code and state stay out of logs
        return


def browser_login(client: Client, method: str, role: str, *, open_browser: bool = True,
                  timeout: float = 300.0) -> None:
    """Sign in with ``role`` of ``method`` in a browser; the client holds the Coffer token afterwards."""
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    listener = _Listener()
    thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    try:
        url = client.authorize_url(method, role, listener.redirect_uri, state, challenge)
        opened = open_browser and _open(url)
        if opened:
            click.echo(f"A browser was opened to sign in; if it did not, open this URL:\n  {url}", err=True)
        else:
            click.echo(f"Open this URL in a browser to sign in:\n  {url}", err=True)
        deadline = time.monotonic() + timeout
        while not listener.arrived.wait(0.2):
            if time.monotonic() > deadline:
                raise click.ClickException(f"no sign-in came back to {listener.redirect_uri} in {timeout:.0f} s")
    finally:
        listener.shutdown()
        listener.server_close()
    query = listener.query or {}
    if "error" in query:
        raise click.ClickException(f"the provider refused the sign-in: {query['error'][:200]}")
    if query.get("state") != state or "code" not in query:
        raise click.ClickException("the sign-in came back without its code or with another state: not used")
    client.login_oidc(method, query["code"], state, verifier, listener.redirect_uri)


def _open(url: str) -> bool:
    try:
        return bool(webbrowser.open(url))
    except webbrowser.Error:
        return False


def device_login(client: Client, method: str, role: str, *, open_browser: bool = True) -> None:
    """Sign in with ``role`` of ``method`` by the provider's device authorization grant; the client holds the
    Coffer token afterwards. Progress goes to stderr: a line counting down on a terminal, else a dot a poll."""
    start = client.start_device_login(method, role)
    uri, code = _shown(start["verification_uri"]), _shown(start["user_code"])
    complete = _shown(start.get("verification_uri_complete") or "")
    interval, left = max(1, int(start.get("interval") or 5)), int(start["expires_in"])
    click.echo(f"To sign in, open {uri} on any device and enter the code\n\n    {code}\n", err=True)
    if complete:
        click.echo(f"(or open {complete}, which carries the code)", err=True)
    if open_browser and _open(complete or uri):
        click.echo("A browser was opened there.", err=True)
    deadline, tty = time.monotonic() + left, sys.stderr.isatty()
    click.echo(f"Waiting for the sign-in at the provider (the code expires in {_minutes(left)})",
               err=True, nl=not tty)
    try:
        while True:
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                raise click.ClickException("the code expired before the sign-in ended: run coffer login again")
            try:
                client.login_device(method, start["device_code"])
                return
            except AuthenticationError as exc:
                interval = _next_interval(exc, interval)
            remaining = deadline - time.monotonic()
            click.echo(f"\rWaiting for the sign-in at the provider ({_minutes(remaining)} left) " if tty else ".",
                       err=True, nl=False)
    finally:
        click.echo("", err=True)


def _next_interval(exc: AuthenticationError, interval: int) -> int:
    """How long to wait before the next poll, or the end of the sign-in as the CLI says it."""
    reason, told = exc.details.get("reason"), exc.details.get("interval")
    if reason == "authorization_pending":
        return told if isinstance(told, int) and told > 0 else interval
    if reason == "slow_down":
        return told if isinstance(told, int) and told > interval else interval + 5
    if reason == "access_denied":
        raise click.ClickException("the sign-in was refused at the provider") from None
    if reason == "expired_token":
        raise click.ClickException("the code expired before the sign-in ended: run coffer login again") from None
    raise exc


def _shown(text: str) -> str:
    """What the server sent, without anything a terminal would act on (control characters, escapes)."""
    return "".join(c for c in str(text) if c.isprintable())[:2048]


def _minutes(seconds: float) -> str:
    whole = max(0, int(seconds))
    return f"{whole // 60}:{whole % 60:02d}"
