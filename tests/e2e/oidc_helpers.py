"""A real OpenID provider for the SSO tests (api.md §10, issue #30): node's ``oidc-provider`` (tests/oidc,
its version pinned in package.json and package-lock.json) on 127.0.0.1, and a "browser" that signs in
through its dev login and consent pages.

The provider's clients are ``coffer`` (client_secret_basic, PKCE required, and the device authorization
grant of RFC 8628, polled every second) and ``coffer-web`` (the code flow only); their redirect URIs are
``http://127.0.0.1/callback`` (any port: a native client's loopback, RFC 8252 §7.3) and
``https://coffer.example.test/oidc/callback``. An account named ``alice+admins+ops`` is in the groups
``admins`` and ``ops`` (the ``groups`` claim); its ``email`` is ``alice@example.test``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import pytest

from tests.conftest import free_port, remember_secret

PACKAGE = Path(__file__).resolve().parents[1] / "oidc"
CLIENT_ID = "coffer"
LOOPBACK = "http://127.0.0.1/callback"
REGISTERED = "https://coffer.example.test/oidc/callback"


def ensure_installed() -> None:
    """``npm ci`` in tests/oidc once, when its node_modules is missing (``make peers`` does it too)."""
    if (PACKAGE / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("the SSO tests need node and npm (tests/oidc runs node's oidc-provider)")
    print(f"installing the test OpenID provider: npm ci --prefix {PACKAGE} ...")  # noqa: T201
    done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--prefix", str(PACKAGE)], capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0:
        pytest.fail(f"npm ci --prefix {PACKAGE} failed:\n{done.stderr[-2000:]}")


@dataclass
class Provider:
    url: str
    client_secret: str
    #: a second provider of the same process that offers no device authorization grant (``plain=True``)
    plain_url: str = ""
    #: where the provider writes each device code it issues, one a line
    issued: Path | None = None

    def device_codes(self) -> list[str]:
        """The provider's device codes issued so far (each remembered as a secret: never in a log line)."""
        lines = self.issued.read_text().split() if self.issued is not None and self.issued.exists() else []
        return [remember_secret(code) for code in lines]


async def serve_provider(*, plain: bool = False, record: Path | None = None) -> AsyncIterator[Provider]:
    """The provider on a free port (``plain``: and one without the device grant on another); ``record``: a
    file the provider writes its device codes to, so that a test can tell they never reach an answer or a log
    line."""
    ensure_installed()
    port, secret = free_port(), remember_secret(f"oidc-secret-{secrets.token_hex(16)}")
    env = {**os.environ, "OIDC_PORT": str(port), "OIDC_CLIENT_SECRET": secret}
    plain_url = ""
    if plain:
        plain_port = free_port()
        env["OIDC_PLAIN_PORT"], plain_url = str(plain_port), f"http://127.0.0.1:{plain_port}"
    if record is not None:
        env["OIDC_RECORD"] = str(record)
    proc = await asyncio.create_subprocess_exec("node", str(PACKAGE / "server.js"), env=env,
                                                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                if all([await _answers(http, u) for u in (url, plain_url) if u]):
                    break
                if proc.returncode is not None:
                    err = await proc.stderr.read() if proc.stderr else b""
                    pytest.fail(f"the test OpenID provider did not start: {err.decode()[-2000:]}")
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the test OpenID provider did not answer in 10 s")
        yield Provider(url, secret, plain_url, record)
    finally:
        proc.terminate()
        await proc.wait()


async def _answers(http: aiohttp.ClientSession, issuer: str) -> bool:
    try:
        async with http.get(issuer + "/.well-known/openid-configuration") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


def pkce() -> tuple[str, str]:
    """A code verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.method = "get"
        self.fields: dict[str, str] = {}
        self._in = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action, self.method, self._in = a.get("action", ""), a.get("method", "get").lower(), True
        elif tag == "input" and self._in and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in = False


Fill = Callable[[dict[str, str], str], "dict[str, str] | None"]


async def _walk(location: str, provider: str, fill: Fill, *, follow_home: bool = False) -> tuple[str, str]:
    """A browser going through the provider's pages from ``location``: each page's form is filled by
    ``fill(fields, page)`` and submitted. Ends at the first redirect out of the provider — ``(its URL, "")``;
    ``follow_home``: also GET it, as a browser would, reaching the CLI's loopback listener — or at a page
    with no form, or whose form ``fill`` leaves (``None``) — ``("", the page)``."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        url, method, data = location, "get", None
        for _ in range(20):
            async with browser.request(method, url, data=data, allow_redirects=False) as resp:
                body = await resp.text()
                if resp.status in (302, 303):
                    url, method, data = urljoin(url, resp.headers["Location"]), "get", None
                    if not url.startswith(provider):
                        if follow_home:
                            async with browser.get(url) as home:
                                await home.read()
                        return url, ""
                    continue
                assert resp.status == 200, (resp.status, body[:500])
            form = _Form()
            form.feed(body)
            fields = fill(dict(form.fields), body) if form.action is not None else None
            if fields is None:
                return "", body
            url, method, data = urljoin(url, form.action or ""), form.method, fields
        raise AssertionError("the provider's pages did not end")


def _logs_in(login: str) -> Fill:
    """Fills the provider's login form as ``login`` (any password); other forms (consent) as they are."""
    def fill(fields: dict[str, str], page: str) -> dict[str, str]:
        if "login" in fields or "<input" in page and 'name="login"' in page:
            fields.update(login=login, password="any-password")
        return fields
    return fill


async def sign_in(location: str, provider: str, login: str, *, follow_home: bool = False) -> str:
    """Go where ``authorize`` sent the browser, sign in as ``login`` (any password) and consent: the URL the
    provider finally redirects to (outside the provider). ``follow_home``: also GET that URL (as a browser
    would, reaching the CLI's loopback listener)."""
    url, page = await _walk(location, provider, _logs_in(login), follow_home=follow_home)
    assert url, f"the provider's pages did not end in a redirect: {page[:500]}"
    return url


async def device_sign_in(verification_uri: str, user_code: str, provider: str, login: str, *,
                         deny: bool = False) -> str:
    """A person's part of a device sign-in (RFC 8628): at ``verification_uri``, enter ``user_code``, confirm
    the device, sign in as ``login`` and consent — or, ``deny``, abort at the confirmation. The provider's
    last page (its text)."""
    logs_in, aborted = _logs_in(login), []

    def fill(fields: dict[str, str], page: str) -> dict[str, str] | None:
        if aborted:
            return None  # the page after the abort: the code form again, left alone
        if "user_code" in fields and not fields["user_code"]:
            fields["user_code"] = user_code
        if "confirm" in fields and deny:
            aborted.append(True)
            fields["abort"] = "yes"  # the confirmation page's [ Abort ] button
        return logs_in(fields, page)

    url, page = await _walk(verification_uri, provider, fill)
    assert not url, url
    return page


def code_and_state(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    assert "code" in query, url
    return remember_secret(query["code"][0]), query["state"][0]
