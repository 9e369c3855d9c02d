"""The PKI's public routes: a CA's CRL and the OCSP responder (api.md §6), no token.

Relying parties call them (``openssl``, TLS libraries, browsers), often from
behind one address: they are in the ``read`` rate-limit category, not the
stricter ``pki`` one. A failure of the platform (maintenance, a service down,
a rate limit) is the usual JSON envelope; an OCSP request that does not parse
is answered in OCSP's own terms (``malformedRequest``, HTTP 200, RFC 6960
A.1), since that is what an OCSP client can read.
"""

from __future__ import annotations

import base64
from urllib.parse import unquote

from aiohttp import web

from services.gateway.edge.routes import Route, context
from services.gateway.state import state
from shared.contracts.pki import CrlRequest, OcspQuery
from shared.errors import InvalidRequest

#: an OCSP request for one certificate is about 100 bytes; a few KiB allows extensions
MAX_OCSP_REQUEST = 8192
OCSP_PREFIX = "/v1/pki/ocsp/"


async def get_crl(request: web.Request) -> web.Response:
    """DER (``application/pkix-crl``), or PEM when the caller accepts ``application/x-pem-file``."""
    crl = await state(request).pki.crl(context(request), CrlRequest(id=request.match_info["id"][:64]))
    der = base64.b64decode(crl.der)
    if "application/x-pem-file" in request.headers.get("Accept", ""):
        body = b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(der) + b"-----END X509 CRL-----\n"
        return web.Response(body=body, content_type="application/x-pem-file")
    return web.Response(body=der, content_type="application/pkix-crl")


async def _answer(request: web.Request, der: bytes) -> web.Response:
    query = OcspQuery(request=base64.b64encode(der).decode())
    answer = await state(request).pki.ocsp(context(request), query)
    return web.Response(body=base64.b64decode(answer.response), content_type="application/ocsp-response")


async def ocsp_post(request: web.Request) -> web.Response:
    """RFC 6960 A.1: the DER request as the body."""
    if request.content_length is not None and request.content_length > MAX_OCSP_REQUEST:
        raise InvalidRequest("OCSP request too large", details={"max_bytes": MAX_OCSP_REQUEST})
    der = await request.read()
    if len(der) > MAX_OCSP_REQUEST:
        raise InvalidRequest("OCSP request too large", details={"max_bytes": MAX_OCSP_REQUEST})
    return await _answer(request, der)


async def ocsp_get(request: web.Request) -> web.Response:
    """RFC 6960 A.1: ``GET {url}/{url-encoding of base-64 encoding of the DER request}``."""
    encoded = request.rel_url.raw_path[len(OCSP_PREFIX):]
    if len(encoded) > 4 * MAX_OCSP_REQUEST:
        raise InvalidRequest("OCSP request too large", details={"max_bytes": MAX_OCSP_REQUEST})
    try:
        der = base64.b64decode(unquote(encoded), validate=True)
    except ValueError:
        der = b""  # not base64: the responder answers malformedRequest
    return await _answer(request, der)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/pki/cas/{id}/crl", get_crl, public=True, category="read", errors=("ca_not_found",),
          media="application/pkix-crl"),
    Route("POST", "/v1/pki/ocsp", ocsp_post, public=True, category="read", media="application/ocsp-response"),
    Route("GET", r"/v1/pki/ocsp/{tail:[\s\S]+}", ocsp_get, public=True, category="read",
          doc_paths=("/v1/pki/ocsp/{request}",), media="application/ocsp-response"),
)
