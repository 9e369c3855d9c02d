"""What every call of both clients shares: how a call is described (``_Call``), the request it becomes,
and how its answer is read — the retries on 429/503 included (see ``client.py``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from coffer_client.errors import from_response

DEFAULT_ADDR = "http://127.0.0.1:8700"
VERSION = "0.1.0"
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def _identity(body: Any) -> Any:
    return body


def _seg(text: str) -> str:
    return quote(text, safe="")


def _secret_path(path: str) -> str:
    return quote(path.strip("/"), safe="/")


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


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None
