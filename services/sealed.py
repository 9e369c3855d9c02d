"""The sealed gateway: what answers on the gateway's address while this process is sealed (api.md §11).

The services can't start sealed (they need their keys at start), so until the seal opens a small
aiohttp app listens where the gateway will:

- ``GET /v1/sys/health`` → 503 ``{"status": "sealed", "sealed": true, "type", "reason"?, "message"?}``
  with the error envelope beside it (as a degraded health answer has);
- ``GET /v1/sys/seal-status`` → ``{sealed, type, progress, threshold, initialized}``;
- ``POST /v1/sys/unseal`` ``{share}`` (no token; shamir) → ``{sealed, progress, threshold}``; a wrong,
  repeated or malformed share is 400 ``invalid_request`` (``details.reason``) and resets nothing.
  A share is at most 128 characters, a body at most 4 KiB, and the call spends from the caller's
  address's ``auth`` bucket (``COFFER_RATE_LIMITS``), as ``sys/init`` does;
- ``POST /v1/sys/init`` (shamir, no sealed keyring yet): makes the seal and the keyring, unseals in
  memory, lets the platform start, runs the gateway's own init there and answers both: the shares
  (once) and ``{tenant_id, client_id, client_secret, token}``. Initialised already: 409 ``name_conflict``;
- everything else: 503 ``service_unavailable`` with ``details.sealed: true``.

Every answer carries the gateway's headers (``X-Request-ID``, ``Cache-Control: no-store``,
``X-RateLimit-*``, ``Server: coffer``) and closes its connection, so no client keeps a connection to an
app that is about to stop listening. ``run_gateway`` is a distributed gateway process's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from services.gateway.edge.clients import ClientAddresses
from services.gateway.edge.limits import Allowance, RateLimiter, category_of, parse_limits
from services.gateway.edge.routes import error_response, json_response, read_model
from services.gateway.edge.server import GatewayRunner
from services.gateway.iam.models import InitRequest
from services.gateway.settings import GatewaySettings
from services.gateway.system.routes import SysInitRequest, UnsealRequest
from shared.context import sane_request_id
from shared.custody import Custody
from shared.errors import CofferError, InternalError, InvalidRequest, NameConflict, ServiceUnavailable, envelope
from shared.seal import SealError

log = structlog.get_logger("coffer.seal")

MAX_BODY = 4096
_REQUEST_ID = web.RequestKey("sealed_request_id", str)
_ALLOWANCE = web.RequestKey("sealed_allowance", Allowance)
AUTH_PATHS = ("/v1/sys/unseal", "/v1/sys/init")


class SealedServer:
    """The sealed app on the gateway's address, for one sealed period of this process."""

    def __init__(self, custody: Custody, settings: GatewaySettings, *,
                 database_initialised: Callable[[], Awaitable[bool]] | None = None) -> None:
        self.custody = custody
        self.settings = settings
        self._database_initialised = database_initialised
        try:
            self.limiter = RateLimiter(parse_limits(settings.rate_limits))
        except ValueError as exc:
            raise SystemExit(f"COFFER_RATE_LIMITS: {exc}") from None
        self.clients = ClientAddresses(settings.trusted_proxies)
        self.runner: GatewayRunner | None = None
        self.site: web.TCPSite | None = None
        self.url: str | None = None
        #: a shamir sys/init waiting for the platform: its names, and where its answer goes
        self.pending_init: tuple[InitRequest, asyncio.Future[dict[str, Any]]] | None = None

    # -- the app ------------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._edge], client_max_size=MAX_BODY)
        app.router.add_get("/v1/sys/health", self._health)
        app.router.add_get("/v1/sys/seal-status", self._seal_status)
        app.router.add_post("/v1/sys/unseal", self._unseal)
        app.router.add_post("/v1/sys/init", self._init)
        app.router.add_route("*", "/{tail:.*}", self._sealed)  # also a known path with another method
        return app

    def _key(self, request: web.Request) -> str:
        return f"ip:{self.clients.of(request)}"

    @web.middleware
    async def _edge(self, request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        request_id = sane_request_id(request.headers.get("X-Request-ID"))
        request[_REQUEST_ID] = request_id
        category = "auth" if request.path in AUTH_PATHS else category_of(request.method, request.path)
        try:
            request[_ALLOWANCE] = self.limiter.take(category, self._key(request))
            response = await handler(request)
        except CofferError as exc:
            response = error_response(exc, request_id)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            message = "request body too large" if exc.status == 413 else (exc.reason or "bad request")
            response = error_response(InvalidRequest(message), request_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the envelope, never a trace; the type only in the log
            log.exception("sealed_request_crashed", method=request.method)
            response = error_response(InternalError("unexpected error"), request_id)
        response.headers["X-Request-ID"] = request_id
        response.headers["Cache-Control"] = "no-store"
        response.headers["Server"] = "coffer"
        if "X-RateLimit-Limit" not in response.headers:
            allowance = request.get(_ALLOWANCE) or self.limiter.peek(category, self._key(request))
            response.headers.update(allowance.headers())
        response.force_close()
        return response

    def _sealed_error(self) -> ServiceUnavailable:
        details: dict[str, Any] = {"sealed": True, "type": self.custody.type}
        if self.custody.reason:
            details["reason"] = self.custody.reason
        return ServiceUnavailable("Coffer is sealed: unseal it first (GET /v1/sys/seal-status)", details=details)

    async def _sealed(self, request: web.Request) -> web.Response:
        raise self._sealed_error()

    async def _health(self, request: web.Request) -> web.Response:
        status = self.custody.status()
        body: dict[str, Any] = {"status": "sealed" if status["sealed"] else "unsealing", "sealed": status["sealed"],
                                "type": self.custody.type}
        for key in ("reason", "message"):
            if key in status:
                body[key] = status[key]
        error = self._sealed_error()
        body["error"] = envelope(error, request[_REQUEST_ID])["error"]
        return json_response(body, status=error.status)

    async def _seal_status(self, request: web.Request) -> web.Response:
        return json_response(self.custody.status())

    async def _unseal(self, request: web.Request) -> web.Response:
        body = await read_model(request, UnsealRequest)
        custody, ip = self.custody, self.clients.of(request)
        if custody.auto:
            raise InvalidRequest(f"the {custody.type} seal unseals by itself: it takes no shares",
                                 details={"reason": "auto_seal"})
        try:
            progress, threshold = custody.add_share(body.share)
        except SealError as exc:
            custody.note_attempt(outcome="invalid_request", reason=exc.reason, status=400,
                                 client_ip=str(ip) if ip else None, request_id=request[_REQUEST_ID])
            log.warning("unseal_share_refused", reason=exc.reason, client_ip=str(ip) if ip else None)
            unsealer = custody.unsealer
            details: dict[str, Any] = {"reason": exc.reason}
            if unsealer is not None:
                details.update(progress=unsealer.progress, threshold=unsealer.threshold)
            raise InvalidRequest(exc.message, details=details) from None
        custody.note_attempt(outcome="ok", reason="unsealed" if not custody.sealed else "share_accepted", status=200,
                             client_ip=str(ip) if ip else None, request_id=request[_REQUEST_ID])
        log.warning("unseal_share_accepted", progress=progress if custody.sealed else threshold, threshold=threshold)
        return json_response({"sealed": custody.sealed, "progress": progress if custody.sealed else 0,
                              "threshold": threshold})

    async def _init(self, request: web.Request) -> web.Response:
        custody = self.custody
        if custody.type != "shamir":
            raise self._sealed_error()  # an auto seal's keyring is made at start; sys/init once unsealed
        if custody.initialized or not custody.sealed:
            raise NameConflict("Coffer is already initialised (sealed: unseal it with the shares)")
        body = await read_model(request, SysInitRequest)
        if self._database_initialised is not None and await self._database_initialised():
            raise NameConflict("Coffer is already initialised, but its sealed keyring is missing: restore it "
                               "from a backup")  # (no path: this answer is anonymous)
        # reserved before the seal opens: the platform that starts next must not take another caller's
        # sys/init between its first listening and this init's run (finish_init lifts it)
        custody.init_reserved = True
        try:
            shares = await custody.init_shamir(body.secret_shares, body.secret_threshold)
        except SealError as exc:
            custody.init_reserved = False
            if exc.reason == "exists":
                raise NameConflict("Coffer is already initialised") from None
            raise InvalidRequest(exc.message, details={"reason": exc.reason}) from None
        log.warning("seal_initialised", seal="shamir", shares=body.secret_shares, threshold=body.secret_threshold)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending_init = (InitRequest(tenant_name=body.tenant_name, admin_name=body.admin_name), future)
        try:
            answer = await future
        except CofferError as exc:  # the seal exists now: its shares are answered whatever else failed
            return json_response({**envelope(exc, request[_REQUEST_ID]), "unseal_shares": shares},
                                 status=exc.status)
        except Exception:  # noqa: BLE001
            error = InternalError("the platform did not start after the seal was made: see the logs")
            return json_response({**envelope(error, request[_REQUEST_ID]), "unseal_shares": shares},
                                 status=error.status)
        return json_response({**answer, "unseal_shares": shares}, status=201)

    # -- listening ---------------------------------------------------------------------------------------

    async def start(self) -> str:
        self.runner = GatewayRunner(self.app(), access_log=None, handle_signals=False,
                                    headers_for=lambda remote: self.limiter.peek("read", f"ip:{remote}").headers())
        await self.runner.setup()
        self.site = web.TCPSite(self.runner, self.settings.http_host, self.settings.http_port)
        try:
            await self.site.start()
        except OSError as exc:
            await self.runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise SystemExit(f"coffer: port {self.settings.http_port} is in use on {self.settings.http_host}: "
                                 "stop what holds it, or set COFFER_HTTP_PORT") from None
            raise
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop_listening(self) -> None:
        """Close the listening socket (the platform takes the address); answers under way go on."""
        if self.site is not None:
            await self.site.stop()
            self.site = None

    async def finish_init(self, run: Callable[[InitRequest], Awaitable[dict[str, Any]]] | None,
                          failure: BaseException | None = None) -> None:
        """Answer a pending shamir ``sys/init``: with ``run``'s answer (the gateway's init), or ``failure``."""
        if self.pending_init is None:
            return
        body, future = self.pending_init
        self.pending_init = None
        try:
            if future.done():
                return
            if failure is not None or run is None:
                future.set_exception(failure or InternalError("the platform did not start"))
                return
            try:
                future.set_result(await run(body))
            except Exception as exc:  # noqa: BLE001 - handed to the waiting request
                future.set_exception(exc)
        finally:
            self.custody.init_reserved = False

    async def close(self) -> None:
        """Stop listening, let answers under way finish (the shamir init's included), then stop."""
        await self.stop_listening()
        if self.pending_init is not None:
            await self.finish_init(None)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def sealed_banner(url: str, custody: Custody) -> str:
    """What a sealed process prints: why, and how to unseal (no share, no key)."""
    status = custody.status()
    lines = [f"coffer: SEALED ({custody.type}) at {url}/v1 — every call but sys/health, sys/seal-status, "
             "sys/unseal and sys/init answers 503 until it is unsealed"]
    if custody.type == "shamir" and not status["initialized"]:
        lines += ["  Not initialised: make the seal and the first admin in one call (the shares are shown once):",
                  f"    curl -X POST {url}/v1/sys/init -H 'Content-Type: application/json' \\",
                  "         -d '{\"secret_shares\": 5, \"secret_threshold\": 3}'"]
    elif custody.type == "shamir":
        lines += [f"  Unseal: {status['threshold']} key holders each give one share:",
                  f"    curl -X POST {url}/v1/sys/unseal -H 'Content-Type: application/json' "
                  "-d '{\"share\": \"<one share>\"}'",
                  f"  Progress: curl {url}/v1/sys/seal-status"]
    elif custody.reason == "sealed_by_operator":
        lines += ["  Sealed by POST /v1/sys/seal: it stays sealed until the process is restarted, which unseals "
                  f"it with the {custody.type} seal"]
    else:
        lines += [f"  The {custody.type} seal unseals by itself when it can reach the "
                  f"{'KMS' if custody.type == 'awskms' else 'HSM'} (retrying with backoff); "
                  f"why not yet: curl {url}/v1/sys/health"]
    return "\n".join(lines)


async def first_of(*events: asyncio.Event) -> asyncio.Event:
    """Wait until one of ``events`` is set; that one."""
    waits = {asyncio.ensure_future(e.wait()): e for e in events}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    return next(waits[t] for t in waits if t in done)


def stop_event() -> asyncio.Event:
    """Set on SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


#: what a started platform gives the loop: its gateway's state, the line that says it is up, how to stop it
Opened = tuple[Any, Callable[[], Awaitable[str]], Callable[[], Awaitable[None]]]


async def serve_sealed(custody: Custody, settings: GatewaySettings, stop: asyncio.Event,
                       database_initialised: Callable[[], Awaitable[bool]],
                       open_platform: Callable[[Any], Awaitable[Opened]]) -> None:
    """The sealed app until unsealed (an auto seal by itself; shamir by shares, or by the first ``sys/init``,
    answered once the platform runs), then the platform ``open_platform(kms)`` starts; after ``sys/seal``
    (root admin) the platform stops and the sealed app answers again. Until ``stop``. The loop of both the
    embedded process and a distributed gateway (which differ only in what they start)."""
    from services.gateway.system.routes import initialise
    from services.gateway.system.seal import after_unseal
    from shared.runtime import freeze_startup_heap

    custody.start()
    try:
        while not stop.is_set():
            server: SealedServer | None = None
            if custody.sealed:
                server = SealedServer(custody, settings, database_initialised=database_initialised)
                url = await server.start()
                print(sealed_banner(url, custody), flush=True)
                if await first_of(stop, custody.unsealed) is stop:
                    await server.close()
                    break
                await server.stop_listening()  # the platform takes the address; answers under way finish
            assert custody.kms is not None
            close: Callable[[], Awaitable[None]] | None = None
            try:
                try:
                    state, say, close = await open_platform(custody.kms)
                except BaseException as exc:
                    if server is not None:
                        await server.finish_init(None, exc)
                    raise
                if server is not None:
                    await server.finish_init(functools.partial(initialise, state))
                    await server.close()
                await after_unseal(state, custody)
                print(await say(), flush=True)
                freeze_startup_heap()
                await first_of(stop, custody.seal_requested)
            finally:
                if server is not None:
                    with contextlib.suppress(Exception):
                        await server.close()
                print("coffer: stopping ..." if stop.is_set() else "coffer: sealing: stopping the platform ...",
                      flush=True)
                if close is not None:
                    await close()
            if stop.is_set():
                break
            custody.seal()
    finally:
        if not custody.unsealed.is_set():  # stopped while sealed
            print("coffer: stopping ...", flush=True)
        await custody.close()


def unsealed_line(custody: Custody) -> str:
    return (f"coffer: unsealed ({custody.type}, {custody.how}) in {(custody.took or 0) * 1000:.0f} ms"
            + (f" (the attempt that opened it: {custody.attempt * 1000:.0f} ms)" if custody.attempt is not None
               else ""))


async def run_gateway(spec: Any, settings: GatewaySettings, custody: Custody, make_bus: Callable[[], Any]) -> None:
    """A distributed gateway process with a seal (``serve_sealed``): the other processes keep running with the
    keys they opened when it seals. Until a signal."""
    from services.embedded import database_initialised
    from services.gateway.state import STATE
    from shared.runtime import ServiceRuntime  # the caller is shared.serve.run_sealed_service

    assert settings.database_url is not None
    dsn = settings.database_url.get_secret_value()

    async def open_platform(kms: Any) -> Opened:
        bus = make_bus()
        runtime = ServiceRuntime(spec, settings, bus, kms, dsn)

        async def close() -> None:
            await runtime.close()
            await bus.close()

        try:
            await bus.start()
            running = await runtime.start()
        except BaseException:
            await close()
            raise

        async def say() -> str:  # the line every process of a distributed platform prints
            return (f"coffer {spec.name}: unsealed ({custody.type}) in {(custody.took or 0) * 1000:.0f} ms "
                    f"(the attempt that opened it: {(custody.attempt or 0) * 1000:.0f} ms); "
                    f"listening on {running.url} (Ctrl-C to stop)")

        return running.app[STATE], say, close

    await serve_sealed(custody, settings, stop_event(), functools.partial(database_initialised, dsn, settings),
                       open_platform)
