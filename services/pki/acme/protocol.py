"""RFC 8555 over aiohttp: certbot's ``acme`` library for the messages and JWS, our transport for the wire.

Why not ``acme.client.ClientV2``: it is synchronous (``requests``) and
connects wherever a name resolves. Here every request — to the directory a
tenant chose and to every URL the CA hands back — goes through the outbound
guard (``parse_url`` for the form, ``guarded_connector`` for every address at connect time), runs
on the event loop, and reads at most ``MAX_BODY`` bytes. The messages
(``Directory``, ``Order``, ``Authorization``, ``Error``, the EAB), the JWS
(``acme.jws``, ``josepy``) and the DNS-01 key authorization
(``challenges.DNS01``) are the library's.

``badNonce`` is retried with the fresh nonce the error carries (RFC 8555
§6.5), up to ``NONCE_RETRIES`` times: a CA may refuse any nonce now and then (pebble refuses 5 % of good
ones by default, the tests' pebble a quarter), and three retries let one POST in ten thousand fail at 10 %
— one order in a few hundred, which a benchmark of forty orders met. What still fails after the retries
is ``AcmeUnavailable`` (trouble that passes: an order is tried again later), never the order's end.
A ``rateLimited`` problem or HTTP 429 is ``AcmeRateLimited`` with the
CA's ``Retry-After``; any other problem document is ``AcmeProblem``. Network
trouble, TLS failures, 5xx and refused addresses are ``AcmeUnavailable``.

A CA that could not be used reads "could not connect to the ACME CA"
whatever happened (issue #27: refused, closed at once, silent, an HTTP
status or an answer that is no ACME must not tell the ports of the
operator's networks apart); the cause is logged. Only a CA whose every
address seen is public (``shared.reach.Reach``) is shown more — the HTTP
status, what was wrong with its answer, that it did not answer in time —
and from a CA reached through the private allow-list an error answer counts
only when it is an ACME problem document.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from datetime import UTC, datetime
from typing import Any

import aiohttp
import josepy as jose
import structlog
from acme import jws, messages
from cryptography import x509
from yarl import URL

from shared.outbound import OutboundPolicy, OutboundRefused, check, guarded_connector, parse_url
from shared.reach import COULD_NOT_CONNECT, Reach, cause, note_peers, read_at_most

log = structlog.get_logger("coffer.pki.acme")

#: no ACME answer (a directory, an order, a chain) comes near this
MAX_BODY = 1 << 20
NONCE_RETRIES = 10  # at a 10 % refusal rate, one POST in 10^11 runs out
ALG = jose.ES256
#: how often ARI is asked again: the CA's Retry-After, between a minute and a day (RFC 9773 §4.3)
ARI_RECHECK = 86_400
ARI_MIN_RECHECK = 60
#: what a CA that could not be used reads, whatever happened, unless it is public
CA_UNREACHABLE = f"{COULD_NOT_CONNECT} to the ACME CA"
_ACME_ERROR = "urn:ietf:params:acme:error:"


class AcmeUnavailable(Exception):
    """The CA could not be reached or failed (network, TLS, 5xx, an address the guard refused)."""

    def __init__(self, reason: str, *, timeout: bool = False, refused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.timeout = timeout
        #: the outbound guard refused the address (not the CA's fault)
        self.refused = refused


def unavailable(public: bool, reason: str, *, timeout: bool = False) -> AcmeUnavailable:
    """``reason`` for a CA at public addresses only; ``CA_UNREACHABLE`` for one reached through the operator's
    private allow-list (and no ``timeout``: silent reads like closed)."""
    return AcmeUnavailable(reason, timeout=timeout) if public else AcmeUnavailable(CA_UNREACHABLE)


class AcmeProblem(Exception):
    """The CA answered with a problem document (RFC 7807 / RFC 8555 §6.7)."""

    def __init__(self, problem: dict[str, Any], status: int) -> None:
        super().__init__(str(problem.get("type", "about:blank")))
        self.problem = problem
        self.status = status

    @property
    def kind(self) -> str:
        """The ACME error name (``badNonce``, ``rateLimited``…), or the whole type for other namespaces."""
        typ = str(self.problem.get("type", ""))
        return typ.removeprefix("urn:ietf:params:acme:error:")


class AcmeRateLimited(AcmeProblem):
    def __init__(self, problem: dict[str, Any], status: int, retry_after: int | None) -> None:
        super().__init__(problem, status)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> int | None:
    if not value:
        return None
    if value.strip().isdigit():
        return min(int(value), 86_400)
    try:
        when = datetime.strptime(value.strip(), "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=UTC)
    except ValueError:
        return None
    return max(1, min(86_400, int((when - datetime.now(UTC)).total_seconds())))


def _problem(body: bytes, status: int) -> dict[str, Any]:
    """The problem document, trimmed to what a caller may be shown (no more than a few KiB)."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        return {"type": "about:blank", "status": status}
    keep = {k: doc[k] for k in ("type", "detail", "status", "title") if isinstance(doc.get(k), str | int)}
    if isinstance(doc.get("detail"), str):
        keep["detail"] = doc["detail"][:1000]
    subs = doc.get("subproblems")
    if isinstance(subs, list):
        keep["subproblems"] = [{k: s[k] for k in ("type", "detail", "identifier") if k in s}
                               for s in subs[:20] if isinstance(s, dict)]
    return keep


def _host(url: str) -> str | None:
    try:
        return URL(url).host
    except (ValueError, TypeError):
        return None


def tls_context(ca_bundle: str | None) -> ssl.SSLContext:
    """The system's roots, plus the account's own (a private ACME CA, a test CA)."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cadata=ca_bundle)
    return context


def cert_id(cert: x509.Certificate) -> str | None:
    """The ARI certificate identifier (RFC 9773 §4.1): AKI keyIdentifier '.' serial, both base64url."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        return None
    if aki is None:
        return None
    serial = cert.serial_number.to_bytes((cert.serial_number.bit_length() + 8) // 8, "big")
    b64 = lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")  # noqa: E731
    return f"{b64(aki)}.{b64(serial)}"


class Answer:
    """One HTTP answer of the CA: status, headers and the body (at most ``MAX_BODY`` bytes)."""

    def __init__(self, status: int, headers: Any, body: bytes, public: bool = True) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        #: the CA was reached at public addresses only (what was wrong with its answer may be said)
        self.public = public

    def json(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.body)
        except ValueError:
            raise unavailable(self.public, "the CA answered something that is not JSON") from None
        if not isinstance(doc, dict):
            raise unavailable(self.public, "the CA answered something that is not a JSON object")
        return doc


class AcmeSession:
    """One conversation with a CA, as one account (or as a key about to register)."""

    def __init__(self, directory_url: str, key: jose.JWK, policy: OutboundPolicy, *, ca_bundle: str | None = None,
                 account_url: str | None = None, timeout: float = 30.0) -> None:
        self.directory_url = directory_url
        self.key = key
        self.policy = policy
        self.account_url = account_url
        self._ssl = tls_context(ca_bundle)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None
        self._directory: messages.Directory | None = None
        self._nonces: list[str] = []
        #: every address the CA's names resolved to and every peer connected to, in this session
        self.reach = Reach(_host(directory_url))

    async def __aenter__(self) -> AcmeSession:
        connector = guarded_connector(self.policy, self.reach.lookup(), limit=4, ssl=self._ssl)
        self._http = aiohttp.ClientSession(connector=note_peers(connector, self.reach), timeout=self._timeout)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._http is not None:
            await self._http.close()

    # -- the wire ------------------------------------------------------------------------------

    async def _send(self, method: str, url: str, *, data: bytes | None = None) -> Answer:
        try:
            parse_url(url, self.policy)  # the form; every address is the guarded connector's to check
        except OutboundRefused as exc:
            raise AcmeUnavailable(f"the CA named a URL the outbound guard refuses: {exc.reason}",
                                  refused=True) from None
        assert self._http is not None, "use the session in 'async with'"
        headers = {"User-Agent": "coffer-acme"}
        if data is not None:
            headers["Content-Type"] = "application/jose+json"
        try:
            async with self._http.request(method, url, data=data, headers=headers, allow_redirects=False) as resp:
                body = await read_at_most(resp.content, MAX_BODY + 1)
                if len(body) > MAX_BODY:
                    raise self._unavailable("the CA's answer is too large")
                answer = Answer(resp.status, resp.headers, body, self.reach.public)
        except TimeoutError as exc:
            raise self._unavailable("the CA did not answer in time", exc, timeout=True) from None
        except aiohttp.ClientConnectorDNSError as exc:  # a name that does not resolve, or an address not permitted
            raise self._unavailable("the CA's address does not resolve or the outbound guard refuses it", exc) \
                from None
        except aiohttp.ClientError as exc:
            raise self._unavailable(f"the CA could not be reached ({type(exc).__name__})", exc) from None
        nonce = answer.headers.get("Replay-Nonce")
        if nonce:
            self._nonces.append(nonce)
        if answer.status == 429 or answer.status >= 400:
            problem = _problem(answer.body, answer.status)
            if not answer.public and not str(problem.get("type", "")).startswith(_ACME_ERROR):
                # through the private allow-list only an ACME CA's own problem is told from "could not connect"
                raise self._unavailable(f"the CA failed (HTTP {answer.status})")
            if answer.status == 429 or problem.get("type") == "urn:ietf:params:acme:error:rateLimited":
                raise AcmeRateLimited(problem, answer.status, _retry_after(answer.headers.get("Retry-After")))
            if answer.status >= 500 and ("detail" not in problem or answer.status in (502, 503, 504)):
                raise self._unavailable(f"the CA failed (HTTP {answer.status})")
            raise AcmeProblem(problem, answer.status)
        return answer

    def _unavailable(self, reason: str, exc: BaseException | None = None, *, timeout: bool = False
                     ) -> AcmeUnavailable:
        """``unavailable`` for this session's CA, the cause logged (never a URL: it may hold the account's id)."""
        log.warning("acme_ca_unreachable", reason=reason, cause=cause(exc) if exc else None, public=self.reach.public)
        return unavailable(self.reach.public, reason, timeout=timeout)

    async def directory(self) -> messages.Directory:
        if self._directory is None:
            doc = (await self._send("GET", self.directory_url)).json()
            try:
                self._directory = messages.Directory.from_json(doc)
                for need in ("newNonce", "newAccount", "newOrder"):
                    parse_url(self._directory[need], self.policy)
            except (jose.DeserializationError, KeyError, OutboundRefused):
                raise self._unavailable("the URL is not an ACME directory") from None
        return self._directory

    async def _nonce(self) -> bytes:
        if not self._nonces:
            await self._send("HEAD", (await self.directory())["newNonce"])
        if not self._nonces:
            raise self._unavailable("the CA gave no nonce")
        return jose.b64decode(self._nonces.pop())

    async def post(self, url: str, payload: dict[str, Any] | None, *, use_kid: bool = True) -> Answer:
        """A JWS-signed POST (``payload`` None: POST-as-GET); ``badNonce`` retried with a fresh nonce."""
        raw = b"" if payload is None else json.dumps(payload).encode()
        for _ in range(NONCE_RETRIES + 1):
            kid = self.account_url if use_kid else None
            # no kid: the JWS carries the public key instead (new-account, RFC 8555 §6.2)
            signed = jws.JWS.sign(raw, key=self.key, alg=ALG, nonce=await self._nonce(), url=url, kid=kid)
            try:
                return await self._send("POST", url, data=signed.json_dumps().encode())
            except AcmeProblem as exc:
                if exc.kind != "badNonce" or isinstance(exc, AcmeRateLimited):
                    raise
        raise self._unavailable(f"the CA refused {NONCE_RETRIES + 1} fresh nonces in a row")

    # -- the protocol's steps ----------------------------------------------------------------------

    async def register(self, email: str | None, eab: tuple[str, str] | None) -> tuple[str, str]:
        """New account, terms accepted (RFC 8555 §7.3), bound to ``eab`` (kid, MAC key) when given."""
        directory = await self.directory()
        binding = None
        if eab is not None:
            binding = messages.ExternalAccountBinding.from_data(self.key.public_key(), eab[0], eab[1], directory)
        reg = messages.NewRegistration.from_data(email=email, external_account_binding=binding,
                                                 terms_of_service_agreed=True)
        answer = await self.post(directory["newAccount"], reg.to_partial_json(), use_kid=False)
        location = await self._handed_back(answer, "account")
        self.account_url = location
        return location, str(answer.json().get("status", "valid"))

    async def new_order(self, domains: list[str], replaces: str | None = None) -> tuple[str, dict[str, Any]]:
        payload: dict[str, Any] = {"identifiers": [{"type": "dns", "value": d} for d in domains]}
        if replaces:
            payload["replaces"] = replaces
        answer = await self.post((await self.directory())["newOrder"], payload)
        return await self._handed_back(answer, "order"), answer.json()

    async def _handed_back(self, answer: Answer, what: str) -> str:
        """The ``Location`` the CA gave, once the outbound guard has passed it (it is stored and used later)."""
        location = answer.headers.get("Location")
        if not location:
            raise self._unavailable(f"the CA gave the {what} no URL")
        try:
            await check(location, self.policy)
        except OutboundRefused as exc:
            raise AcmeUnavailable(f"the CA named a URL the outbound guard refuses: {exc.reason}",
                                  refused=True) from None
        return location

    async def fetch(self, url: str) -> dict[str, Any]:
        return (await self.post(url, None)).json()

    async def poll(self, url: str, done: tuple[str, ...], *, seconds: float) -> dict[str, Any]:
        """The resource at ``url`` once its status is one of ``done`` (or ``invalid``), within ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        wait = 0.2  # growing to 5 s: a test CA answers at once, a real one in seconds
        while True:
            doc = await self.fetch(url)
            if doc.get("status") in (*done, "invalid"):
                return doc
            if loop.time() >= deadline:
                raise AcmeUnavailable(f"the CA left {url.rsplit('/', 1)[-1][:40]} at "
                                      f"'{str(doc.get('status'))[:20]}' too long", timeout=True)
            await asyncio.sleep(wait)
            wait = min(wait * 1.5, 5.0)

    async def answer_challenge(self, url: str) -> None:
        await self.post(url, {})

    async def finalize(self, url: str, csr_der: bytes) -> dict[str, Any]:
        return (await self.post(url, {"csr": jose.b64encode(csr_der).decode()})).json()

    async def download(self, url: str) -> str:
        answer = await self.post(url, None)
        return answer.body.decode("ascii", errors="replace")

    async def renewal_window(self, cert: x509.Certificate) -> tuple[datetime, datetime, int] | None:
        """ARI's suggested window (RFC 9773) and when to ask again (its ``Retry-After``, seconds) when the CA
        offers it, else ``None``."""
        directory = await self.directory()
        base = directory.to_partial_json().get("renewalInfo")
        ident = cert_id(cert)
        if not isinstance(base, str) or ident is None:
            return None
        answer = await self._send("GET", base.rstrip("/") + "/" + ident)
        doc = answer.json()
        window = doc.get("suggestedWindow")
        again = _retry_after(answer.headers.get("Retry-After")) or ARI_RECHECK
        try:
            start = datetime.fromisoformat(str(window["start"]).replace("Z", "+00:00"))
            end = datetime.fromisoformat(str(window["end"]).replace("Z", "+00:00"))
        except (TypeError, KeyError, ValueError):
            return None
        return (start, end, max(ARI_MIN_RECHECK, min(again, ARI_RECHECK))) if start <= end else None
