"""The gateway's HTTP server: aiohttp's, with protocol errors answered as the envelope.

A request aiohttp cannot even parse (a header over 8 KiB, a broken request
line) never reaches the middlewares; aiohttp answers it with plain text from
``RequestHandler.handle_error``. We replace that one method so those
failures, too, are the envelope (``invalid_request`` / ``internal_error``).
This leans on aiohttp's ``Server.__call__`` building a ``RequestHandler``
from ``_kwargs``, covered by ``tests/e2e`` (oversized header).

The Vault listener's clients send ``LIST``, a method aiohttp's C parser
(llhttp, which knows a fixed set of methods) refuses; that listener's handler
parses with aiohttp's pure-Python parser instead, which takes any method token
(``any_method``), with the same limits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.http_parser import HttpRequestParserPy
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from shared.context import new_request_id
from shared.errors import CofferError, InternalError, InvalidRequest, envelope

log = structlog.get_logger("coffer.gateway")


class _EnvelopeRequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        error: CofferError = (
            InternalError("unexpected error") if status >= 500 else InvalidRequest("malformed HTTP request")
        )
        if request.writer.output_size > 0:  # the response is already under way
            return super().handle_error(request, status, exc, message)
        request_id = new_request_id()
        extra = getattr(self._manager, "coffer_headers", None)
        headers = dict(extra(request.remote)) if extra is not None else {}
        shape = getattr(self._manager, "coffer_shape", None)
        log.info("http_malformed", status=error.status, code=error.code, request_id=request_id,
                 reason=type(exc).__name__ if exc else None)
        body = envelope(error, request_id)
        response = web.Response(
            body=orjson.dumps(shape(body) if shape is not None else body), status=error.status,
            content_type="application/json",
            headers={**headers, "X-Request-ID": request_id, "Server": "coffer", "Cache-Control": "no-store"},
        )
        response.force_close()
        return response


class _AnyMethodRequestHandler(_EnvelopeRequestHandler):
    """Parses with aiohttp's pure-Python parser: any method token (``LIST``), the same limits."""

    def __init__(self, manager: web.Server, *, loop: Any, **kwargs: Any) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._parser = HttpRequestParserPy(
            self, loop, self._read_bufsize, max_line_size=self.max_line_size, max_field_size=self.max_field_size,
            max_headers=self.max_headers, payload_exception=RequestPayloadError,
            auto_decompress=kwargs.get("auto_decompress", True), max_msg_queue_size=self._max_msg_queue_size)


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = _AnyMethodRequestHandler if getattr(self, "coffer_any_method", False) else _EnvelopeRequestHandler
        return handler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose protocol-level errors are envelopes too.

    ``headers_for(remote_address)`` gives the headers such an answer carries
    besides the request id (the caller's rate-limit state); ``shape`` what its
    body becomes (the Vault listener adds ``errors``); ``any_method`` takes any
    method token (the Vault listener's ``LIST``).
    """

    def __init__(self, app: web.Application, *, headers_for: Callable[[str | None], dict[str, str]] | None = None,
                 shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None, any_method: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._headers_for = headers_for
        self._shape = shape
        self._any_method = any_method

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EnvelopeServer
        server.coffer_headers = self._headers_for  # type: ignore[attr-defined]
        server.coffer_shape = self._shape  # type: ignore[attr-defined]
        server.coffer_any_method = self._any_method  # type: ignore[attr-defined]
        return server
