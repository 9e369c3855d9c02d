"""The gateway's HTTP server: aiohttp's, with protocol errors answered as the envelope.

A request aiohttp cannot even parse (a header over 8 KiB, a broken request
line) never reaches the middlewares; aiohttp answers it with plain text from
``RequestHandler.handle_error``. We replace that one method so those
failures, too, are the envelope (``invalid_request`` / ``internal_error``).
This leans on aiohttp's ``Server.__call__`` building a ``RequestHandler``
from ``_kwargs``, covered by ``tests/e2e`` (oversized header).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
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
        log.info("http_malformed", status=error.status, code=error.code, request_id=request_id,
                 reason=type(exc).__name__ if exc else None)
        response = web.Response(
            body=orjson.dumps(envelope(error, request_id)), status=error.status,
            content_type="application/json",
            headers={**headers, "X-Request-ID": request_id, "Server": "coffer", "Cache-Control": "no-store"},
        )
        response.force_close()
        return response


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose protocol-level errors are envelopes too.

    ``headers_for(remote_address)`` gives the headers such an answer carries
    besides the request id (the caller's rate-limit state).
    """

    def __init__(self, app: web.Application, *, headers_for: Callable[[str | None], dict[str, str]] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._headers_for = headers_for

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EnvelopeServer
        server.coffer_headers = self._headers_for  # type: ignore[attr-defined]
        return server
