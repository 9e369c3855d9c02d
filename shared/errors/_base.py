"""The root of every Coffer error and the one function that builds the envelope.

    CofferError                      code, status, retryable, message, details
     ├── AuthenticationError (401)   authentication_required, token_expired, ...
     ├── AuthorizationError (403)    access_denied, insufficient_scope, ...
     ├── ValidationFailed (400/422)  invalid_request, invalid_path, ...
     ├── NotFound (404)              secret_not_found, ...
     ├── Conflict (409/410)          secret_exists, version_conflict, ...
     ├── Throttled (429)             rate_limited, quota_exceeded
     ├── Unavailable (503)           service_unavailable, ...
     ├── ServerError (500)           internal_error, encryption_error, ...
     ├── UpstreamError (502/504)     backend_error, ...
     └── WebhookError                webhook_url_invalid, webhook_delivery_* ...

A service raises one of the leaf classes; on the wire an error is the plain
dict ``{code, message, details, headers?}`` (``to_wire``; ``headers`` only
those of ``WIRE_HEADERS``, e.g. ``Retry-After``); the gateway rebuilds it with
``from_wire`` and answers ``envelope(...)`` with ``status`` and the headers. Messages are for
humans and must never carry a secret value, key, password or token.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

__all__ = ["CofferError", "REGISTRY", "WIRE_HEADERS", "envelope", "from_wire", "lookup"]

#: code -> exception class; filled by ``CofferError.__init_subclass__``.
REGISTRY: dict[str, type[CofferError]] = {}

#: the HTTP headers an error may carry across the bus, each with the shape of
#: its value: a peer can pass on a ``Retry-After``, never invent other headers.
WIRE_HEADERS: dict[str, re.Pattern[str]] = {"Retry-After": re.compile(r"^[0-9]{1,9}$")}


class CofferError(Exception):
    """An error of the stable vocabulary.

    Subclasses set ``code`` (and, on their category, ``status``); the class
    docstring's first line is the code's meaning in the generated docs.
    """

    code: ClassVar[str] = ""
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    #: the heading of the vocabulary table the code belongs to.
    section: ClassVar[str] = ""
    default_message: ClassVar[str] = ""

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message or self.code.replace("_", " ")
        self.details: dict[str, Any] = dict(details or {})
        #: extra HTTP headers the gateway adds (``Retry-After`` ...).
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("code")
        if code:
            if code in REGISTRY:
                raise TypeError(f"error code {code!r} defined twice")
            REGISTRY[code] = cls

    def to_wire(self) -> dict[str, Any]:
        """The error as it travels on the bus (with the headers the gateway must send, if any)."""
        wire: dict[str, Any] = {"code": self.code, "message": self.message, "details": self.details}
        headers = _wire_headers(self.headers)
        if headers:
            wire["headers"] = headers
        return wire

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


def _wire_headers(headers: Any) -> dict[str, str]:
    if not isinstance(headers, Mapping):
        return {}
    return {name: value for name, value in headers.items()
            if name in WIRE_HEADERS and isinstance(value, str) and WIRE_HEADERS[name].fullmatch(value)}


def lookup(code: str) -> type[CofferError]:
    """The class of ``code``; ``internal_error``'s for a code outside the vocabulary."""
    return REGISTRY.get(code) or REGISTRY["internal_error"]


def from_wire(payload: Any) -> CofferError:
    """Rebuild an error received over the bus.

    Anything that is not a well-formed error of the vocabulary becomes
    ``internal_error``: a peer cannot invent codes or statuses.
    """
    if not isinstance(payload, Mapping):
        return lookup("internal_error")()
    code = payload.get("code")
    cls = REGISTRY.get(code) if isinstance(code, str) else None
    if cls is None:
        return lookup("internal_error")()
    message = payload.get("message")
    details = payload.get("details")
    return cls(
        message if isinstance(message, str) else None,
        details=details if isinstance(details, Mapping) else None,
        headers=_wire_headers(payload.get("headers")),
    )


def envelope(error: CofferError, request_id: str) -> dict[str, Any]:
    """The one error body every HTTP failure is answered with."""
    return {
        "error": {
            "code": error.code,
            "message": error.message,
            "details": error.details,
            "request_id": request_id,
        }
    }
