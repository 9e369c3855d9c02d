"""What every call of both clients shares: how a call is described (``_Call``), the request it becomes,
and how its answer is read — the retries on 429/503 included (see ``client.py``).

Paths reach the server as typed. httpx resolves ``.`` and ``..`` segments in every URL it parses (RFC 3986
§5.2.4, as a browser does), so ``a/../b`` would leave as ``b`` and the server would act on a secret nobody
named; the request keeps the path it was given instead (``_PathAsTyped``), and the server, which reads its
raw path, answers ``invalid_path``.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from coffer_client.errors import CofferError, from_response

DEFAULT_ADDR = "http://127.0.0.1:8700"
VERSION = "0.1.0"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def _identity(body: Any) -> Any:
    return body


def _seg(text: str) -> str:
    return quote(text, safe="")


def _secret_path(path: str) -> str:
    """A secret's path for the URL: every character a path may not hold escaped, ``/`` kept, nothing
    resolved or trimmed (``a/../b`` and ``/a`` are sent so, for the server to refuse)."""
    return quote(path, safe="/")


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    convert: Callable[[Any], Any] = _identity
    #: statuses besides 2xx whose body is the answer (health's 503 with its report)
    answers: tuple[int, ...] = ()
    #: the body as text (PEM, Prometheus), not JSON
    text: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    #: a body sent as it is (DER), not as JSON
    content: bytes | None = None


class _Base:
    def __init__(self, addr: str | None = None, token: str | None = None, *, tenant: str | None = None,
                 retries: int = 2, max_wait: float = 10.0, timeout: float = 30.0) -> None:
        self.addr = (addr or os.environ.get("COFFER_ADDR") or DEFAULT_ADDR).rstrip("/")
        self.token = token if token is not None else os.environ.get("COFFER_TOKEN") or None
        self.tenant = tenant if tenant is not None else os.environ.get("COFFER_TENANT") or None
        self.retries = max(0, retries)
        self.max_wait = max_wait
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"coffer-client/{VERSION}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.tenant:
            headers["X-Tenant-ID"] = self.tenant
        return headers

    def _request(self, call: _Call) -> dict[str, Any]:
        return {"method": call.method, "url": self.addr + call.path, "json": call.json, "content": call.content,
                "params": _drop_none(call.params) or None, "headers": {**self._headers(), **call.headers}}

    def _build(self, http: httpx.Client | httpx.AsyncClient, call: _Call) -> httpx.Request:
        """The request of ``call``, its path as given (see the module's docstring)."""
        request = http.build_request(**self._request(call))
        typed = quote(httpx.URL(self.addr).raw_path.decode("ascii").rstrip("/") + call.path, safe=_PATH_SAFE)
        query = request.url.query
        raw = typed.encode("ascii") + (b"?" + query if query else b"")
        if raw != request.url.raw_path:
            request.url = _PathAsTyped(request.url, raw)
        return request

    def _unreachable(self, exc: httpx.HTTPError) -> CofferError:
        return CofferError(f"cannot reach {self.addr}: {_reason(exc, self.timeout)}", status=0)

    def _read(self, call: _Call, response: httpx.Response, attempt: int) -> tuple[float | None, Any]:
        """``(wait, None)`` to try again after ``wait`` s; else ``(None, result)`` (or it raises)."""
        if response.is_success or response.status_code in call.answers:
            if response.status_code == 204 or not response.content:
                return None, call.convert(None)
            if call.text:
                return None, call.convert(response.text if response.headers.get("content-type", "").startswith(
                    ("text/", "application/x-pem-file", "application/json")) else response.content)
            return None, call.convert(response.json())
        retry_after = _retry_after(response)
        if attempt < self.retries and (response.status_code == 429 or (
                response.status_code == 503 and call.method in _IDEMPOTENT)):
            wait = retry_after if retry_after is not None else min(2.0 ** attempt, self.max_wait)
            if wait <= self.max_wait:
                return wait, None
        try:
            body = response.json()
        except ValueError:
            body = None
        raise from_response(response.status_code, body, response.headers.get("X-Request-ID"), retry_after)

    def _page_call(self, call: _Call, cursor: str | None) -> _Call:
        return _Call(call.method, call.path, call.json, {**call.params, "cursor": cursor})


#: what a path may hold unescaped (RFC 3986 pchar and "/"); "%" too: a path given already escaped stays so
_PATH_SAFE = "/:@!$&'()*+,;=%"


class _PathAsTyped(httpx.URL):
    """``url`` whose request target is ``raw_path`` as given: httpx's transports send ``URL.raw_path``, the
    one place this overrides, so ``..`` reaches the server instead of being resolved here."""

    def __init__(self, url: httpx.URL, raw_path: bytes) -> None:
        super().__init__(url)
        self._typed_raw_path = raw_path

    @property
    def raw_path(self) -> bytes:
        return self._typed_raw_path

    def __str__(self) -> str:
        return str(self.copy_with(raw_path=b"/")).removesuffix("/") + self._typed_raw_path.decode("ascii")

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"


def _reason(exc: BaseException, timeout: float) -> str:
    """Why a request got no answer, in words (not an exception's class name)."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"timed out connecting (after {timeout:g} s)"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out waiting for an answer (after {timeout:g} s)"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, socket.gaierror):
            return "name not resolved (is the host name right?)"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"its TLS certificate is not trusted ({cause.verify_message or 'verification failed'})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({cause.reason or cause.strerror or 'handshake'}; is the address http or https?)"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is Coffer running there, on that port?)"
        if isinstance(cause, OSError) and cause.errno is not None:
            return os.strerror(cause.errno).lower() if cause.errno > 0 else str(cause.strerror or cause).lower()
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the connection closed without an answer (is something else listening there?)"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "the address must start with http:// or https://"
    return str(exc).lower() or "no answer"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
