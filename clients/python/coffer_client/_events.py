"""``events()``: the event stream (``GET /v1/events``) as an iterator that resumes by itself.

``Client.events`` is a plain iterator, ``AsyncClient.events`` an async one; both read the same frames
(``SseReader``) and decide the same way (``_Resume``):

* an event → yielded (``Event``), its id remembered;
* the connection dropped, the stream was cut for reading too slowly (``reset`` / ``too_far_behind``), the
  gateway stopped, nothing came for ``idle_timeout`` seconds, or a 429/503 → connect again after a short
  wait (longer each time, at most 10 s, or the server's ``Retry-After``) with ``Last-Event-ID``: the events
  missed meanwhile come first, as long as the server keeps them (``COFFER_EVENT_RETENTION``);
* ``reset`` / ``not_kept`` (the id was no longer kept) → yielded as an ``Event`` of type ``reset``: what
  happened meanwhile is unknown, read the state you care about again;
* ``token_expired`` / ``token_revoked``, or any other error answer → raised (``CofferError``).

``on_connect`` is called each time the stream is open (before its first event): what a program reads after
it can't miss a change (``coffer run --watch`` loads its secrets then).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from coffer_client._base import _Call
from coffer_client.errors import from_response

if TYPE_CHECKING:
    from coffer_client.client import AsyncClient, Client

#: seconds without a byte (heartbeats come every 15 s) after which the connection counts as dead
IDLE_TIMEOUT = 45.0
MAX_BACKOFF = 10.0


@dataclasses.dataclass(frozen=True)
class Event:
    """One event: ``type`` (``secret.updated`` …), ``data`` (its metadata: ``path``, ``version`` …); ``id`` is
    ``None`` only for a ``reset``."""

    id: str | None
    type: str
    data: dict[str, Any]
    tenant_id: str | None = None
    occurred_at: str | None = None
    request_id: str | None = None


class SseReader:
    """Lines of a ``text/event-stream`` in, ``(event, id, data)`` frames out (comments dropped)."""

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, line: str) -> tuple[str, str | None, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            fields, self._fields = self._fields, {}
            if "data" not in fields:
                return None
            return fields.get("event", "message"), fields.get("id"), fields["data"]
        if line.startswith(":"):
            return None
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "data" and "data" in self._fields:
            value = self._fields["data"] + "\n" + value
        if key in ("event", "id", "data"):
            self._fields[key] = value
        return None


class _Resume:
    """What to do with each frame, and where to resume after a drop."""

    def __init__(self, types: Iterable[str] | None, path_pattern: str | None, last_event_id: str | None) -> None:
        self.params = {k: v for k, v in (("types", ",".join(types) if types else None),
                                         ("path_pattern", path_pattern)) if v}
        self.last_id = last_event_id
        self.failures = 0

    def call(self) -> _Call:
        headers = {"Accept": "text/event-stream"}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        return _Call("GET", "/v1/events", params=self.params, headers=headers)

    def frame(self, kind: str, event_id: str | None, raw: str) -> Event | None:
        """The event to yield, ``None`` for nothing; ``_Reconnect`` to connect again; a ``CofferError`` raised."""
        data = json.loads(raw)
        self.failures = 0
        if kind in ("token_expired", "token_revoked"):
            raise from_response(401, {"error": {"code": data.get("code", kind), "message": data.get("message", ""),
                                                "details": {}}})
        if kind == "reset":
            if data.get("reason") == "not_kept":
                return Event(None, "reset", data)
            raise _Reconnect(0.0)  # cut for reading too slowly: resume from the last id at once
        self.last_id = event_id or self.last_id
        return Event(event_id, kind, data.get("data") or {}, data.get("tenant_id"), data.get("occurred_at"),
                     data.get("request_id"))

    def answer(self, response: httpx.Response, body: bytes) -> None:
        """A connection that was answered with an error: ``_Reconnect`` for 429/503, else raised."""
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        retry_after = _float(response.headers.get("Retry-After"))
        if response.status_code in (429, 503):
            raise _Reconnect(retry_after if retry_after is not None else self.backoff())
        raise from_response(response.status_code, payload, response.headers.get("X-Request-ID"), retry_after)

    def backoff(self) -> float:
        self.failures += 1
        return float(min(MAX_BACKOFF, 0.25 * 2 ** min(self.failures, 6)))


class _Reconnect(Exception):  # noqa: N818 - a signal, not an error
    def __init__(self, wait: float) -> None:
        self.wait = wait


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _request(client: Client | AsyncClient, state: _Resume, idle: float) -> httpx.Request:
    """The stream's request: the client's headers and path handling, a read timeout of ``idle`` seconds."""
    request = client._build(client._http, state.call())  # noqa: SLF001 - one package
    request.extensions["timeout"] = httpx.Timeout(client.timeout, read=idle).as_dict()
    return request


def sync_events(client: Client, types: Iterable[str] | None, path_pattern: str | None, last_event_id: str | None,
                idle_timeout: float, on_connect: Callable[[], None] | None) -> Iterator[Event]:
    state = _Resume(types, path_pattern, last_event_id)
    while True:
        try:
            response = client._http.send(_request(client, state, idle_timeout), stream=True)  # noqa: SLF001
            try:
                if not response.is_success:
                    state.answer(response, response.read())
                if on_connect is not None:
                    on_connect()
                reader = SseReader()
                for line in response.iter_lines():
                    if (frame := reader.feed(line)) is not None and (event := state.frame(*frame)) is not None:
                        yield event
                raise _Reconnect(state.backoff())  # the server closed the stream
            finally:
                response.close()
        except _Reconnect as again:
            time.sleep(again.wait)
        except httpx.HTTPError:
            time.sleep(state.backoff())


async def async_events(client: AsyncClient, types: Iterable[str] | None, path_pattern: str | None,
                       last_event_id: str | None, idle_timeout: float,
                       on_connect: Callable[[], None] | None) -> AsyncIterator[Event]:
    state = _Resume(types, path_pattern, last_event_id)
    while True:
        try:
            response = await client._http.send(_request(client, state, idle_timeout), stream=True)  # noqa: SLF001
            try:
                if not response.is_success:
                    state.answer(response, await response.aread())
                if on_connect is not None:
                    on_connect()
                reader = SseReader()
                async for line in response.aiter_lines():
                    if (frame := reader.feed(line)) is not None and (event := state.frame(*frame)) is not None:
                        yield event
                raise _Reconnect(state.backoff())
            finally:
                await response.aclose()
        except _Reconnect as again:
            await asyncio.sleep(again.wait)
        except httpx.HTTPError:
            await asyncio.sleep(state.backoff())

