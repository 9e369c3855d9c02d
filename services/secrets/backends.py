"""Federation backends (api.md §5.4): secrets read from another store, answered in Coffer's shapes.

- ``coffer``: another Coffer installation (or tenant) through its HTTP API, with client credentials
  (a token fetched and kept until shortly before it expires).
- ``aws_secrets_manager``: AWS Secrets Manager through ``aiobotocore``; ``SecretId`` = the path below
  the mount.

Every connection goes through the outbound guard (``shared.outbound``): the resolver hands the
connector only checked addresses. Failures map to the vocabulary: unreachable or 5xx →
``backend_error``; throttled → ``backend_rate_limited`` (with the backend's ``Retry-After``); missing →
``secret_not_found`` (raised by the caller, who knows the full path: here ``Missing``). Nothing a
backend answers is logged, and no error carries a credential.

A backend that could not be used reads "could not connect to backend '<name>'" whatever happened —
refused, reset, closed at once, TLS, silent, an answer in no shape we know (issue #27: the error must
not tell closed, open and silent ports of the operator's networks apart); the cause is in the log. Only
a backend whose every address seen is public (``shared.reach.Reach``) is shown more: the HTTP status and
the upstream's error code, and ``backend_timeout`` when it did not answer in time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import orjson
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError
from yarl import URL

from shared.errors import BackendError, BackendRateLimited, BackendTimeout, InvalidConfig
from shared.outbound import GuardedResolver, OutboundPolicy, guarded_connector
from shared.reach import COULD_NOT_CONNECT, Reach, cause, read_at_most

log = structlog.get_logger("coffer.secrets.federation")
#: no answer of a backend (a secret, a page of a list) comes near this
MAX_ANSWER = 4 << 20

_THROTTLED = ("ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "Throttling")
_REFUSED = ("UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException",
            "IncompleteSignature", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredTokenException")


class Missing(Exception):
    """The backend has no secret at that path."""


@dataclass(frozen=True)
class Remote:
    """A backend's secret, in the parts Coffer's shapes need (``value`` is absent in lists)."""

    path: str
    version: int
    created_at: datetime
    updated_at: datetime
    secret_type: str = "generic"
    metadata: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None
    value: Any = field(default=None, repr=False)


class Backend(Protocol):
    name: str

    async def check(self, timeout: float) -> None:
        """Connect and authenticate: ``invalid_config`` if refused, ``backend_error`` if unreachable."""

    async def read(self, path: str, timeout: float) -> Remote: ...

    async def list(self, prefix: str, cursor: str | None, limit: int, timeout: float
                   ) -> tuple[list[Remote], str | None]: ...

    async def close(self) -> None: ...


def _retry_after(value: object) -> dict[str, str]:
    text = str(value or "").strip()
    return {"Retry-After": text} if text.isdigit() and len(text) <= 9 else {}


def _now() -> datetime:
    return datetime.now(UTC)


def _host(url: object) -> str | None:
    try:
        return URL(str(url)).host if url else None
    except (ValueError, TypeError):
        return None


class _Shape(Exception):
    """A backend's answer is in no shape we know; ``what`` says how, for a public backend's error."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def unreachable(name: str, exc: BaseException, reach: Reach, *, timeout: float | None = None
                ) -> BackendError | BackendTimeout:
    """The one answer for a backend that could not be used (``timeout``: it did not answer within that many
    seconds); ``backend_timeout`` only for a public backend. The cause goes to the log."""
    log.warning("federation_backend_unreachable", backend=name, cause=cause(exc), public=reach.public,
                timed_out=timeout is not None)
    if timeout is not None and reach.public:
        return BackendTimeout(f"backend '{name}' did not answer within {timeout:g} s", details={"backend": name})
    return BackendError(f"{COULD_NOT_CONNECT} to backend '{name}'", details={"backend": name})


def answered(name: str, reach: Reach, message: str, status: int | None = None, upstream: str | None = None
             ) -> BackendError:
    """A backend answered, but not what we asked: ``message``, its status and error code for a public
    backend; for one reached through the operator's private allow-list, what ``unreachable`` says."""
    log.warning("federation_backend_answered", backend=name, status=status, upstream=upstream, public=reach.public)
    if not reach.public:
        return BackendError(f"{COULD_NOT_CONNECT} to backend '{name}'", details={"backend": name})
    details: dict[str, Any] = {"backend": name}
    if status is not None:
        details.update(status=status, upstream=upstream)
    return BackendError(message, details=details)


def shown(name: str, reach: Reach, status: int, upstream: str | None) -> dict[str, Any]:
    """``details`` of a refusal or a rate limit: the status and the upstream's code for a public backend only."""
    return {"backend": name, "status": status, "upstream": upstream} if reach.public else {"backend": name}


# -- another Coffer -----------------------------------------------------------------------------------

class CofferBackend:
    def __init__(self, name: str, config: Mapping[str, Any], credentials: Mapping[str, str],
                 policy: OutboundPolicy) -> None:
        self.name = name
        self.url = str(config["url"]).rstrip("/")
        self.tenant_id = config.get("tenant_id")
        self.client_id = credentials["client_id"]
        self._client_secret = credentials["client_secret"]
        self.policy = policy
        #: every address this backend's name resolved to: what it answered is shown only while all are public
        self.reach = Reach(_host(self.url))
        self._session: aiohttp.ClientSession | None = None
        self._token: tuple[str, float] | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=guarded_connector(self.policy, self.reach.lookup(),
                                                                              limit=32),
                                                  headers={"User-Agent": "coffer-federation"})
        return self._session

    async def _send(self, method: str, path: str, timeout: float, **kwargs: Any) -> tuple[int, Any, Any]:
        """(status, the body as JSON or ``None``, headers); a backend that could not be used is ``unreachable``."""
        try:
            async with asyncio.timeout(timeout):
                async with self._http().request(method, self.url + path, allow_redirects=False, **kwargs) as resp:
                    raw = await read_at_most(resp.content, MAX_ANSWER + 1)
                    if len(raw) > MAX_ANSWER:
                        raise ValueError("the answer is too large")
                    return resp.status, _json(raw), resp.headers
        except TimeoutError as exc:
            raise unreachable(self.name, exc, self.reach, timeout=timeout) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise unreachable(self.name, exc, self.reach) from None

    async def _auth(self, timeout: float, *, fresh: bool = False) -> str:
        if self._token and not fresh and self._token[1] > time.monotonic():
            return self._token[0]
        status, body, headers = await self._send("POST", "/v1/auth/token", timeout, json={
            "client_id": self.client_id, "client_secret": self._client_secret})
        if status in (400, 401, 403, 422) and (self.reach.public or _code(body) is not None):
            # a private backend must answer Coffer's envelope to be told "refused" from "could not connect"
            details = {"backend": self.name, "upstream": _code(body)} if self.reach.public else {"backend": self.name}
            raise InvalidConfig(f"backend '{self.name}' refused the client credentials", details=details)
        self._raise_for(status, body, headers)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise answered(self.name, self.reach, f"backend '{self.name}' answered without a token")
        lifetime = body.get("expires_in") if isinstance(body.get("expires_in"), int) else 300
        self._token = (token, time.monotonic() + max(10, lifetime - 30))
        return token

    def _raise_for(self, status: int, body: Any, headers: Any) -> None:
        if status < 400:
            return
        if status == 429:
            raise BackendRateLimited(f"backend '{self.name}' is rate limiting us",
                                     details=shown(self.name, self.reach, status, _code(body)),
                                     headers=_retry_after(headers.get("Retry-After")))
        raise answered(self.name, self.reach, f"backend '{self.name}' answered {status}", status, _code(body))

    async def _get(self, path: str, timeout: float, params: dict[str, str] | None = None) -> Any:
        deadline = time.monotonic() + timeout
        for fresh in (False, True):
            headers = {"Authorization": f"Bearer {await self._auth(timeout, fresh=fresh)}"}
            if self.tenant_id:
                headers["X-Tenant-ID"] = str(self.tenant_id)
            status, body, resp_headers = await self._send("GET", path, max(0.05, deadline - time.monotonic()),
                                                          headers=headers, params=params)
            if status == 401 and not fresh:
                continue  # the token expired or was revoked there: once more with a new one
            if status == 404 and _code(body) == "secret_not_found":
                raise Missing()
            self._raise_for(status, body, resp_headers)
            return body
        raise answered(self.name, self.reach, f"backend '{self.name}' refused its own token")

    async def check(self, timeout: float) -> None:
        await self._auth(timeout, fresh=True)

    async def read(self, path: str, timeout: float) -> Remote:
        body = await self._get(f"/v1/secrets/{path}", timeout)
        try:
            return _remote(body, path, with_value=True)
        except _Shape as exc:
            raise answered(self.name, self.reach, exc.what) from None

    async def list(self, prefix: str, cursor: str | None, limit: int, timeout: float
                   ) -> tuple[list[Remote], str | None]:
        params = {"prefix": prefix, "limit": str(limit)}
        if cursor:
            params["cursor"] = cursor
        body = await self._get("/v1/secrets", timeout, params)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise answered(self.name, self.reach, f"backend '{self.name}' answered a list in another shape")
        nxt = body.get("next_cursor")
        try:
            remotes = [_remote(item, str(item.get("path", "")), with_value=False) for item in items]
        except (_Shape, AttributeError):
            raise answered(self.name, self.reach, f"backend '{self.name}' answered a list in another shape") \
                from None
        return remotes, (nxt if isinstance(nxt, str) else None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _json(raw: bytes) -> Any:
    """The body as JSON; ``None`` when empty or not JSON (a status still says what happened)."""
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _code(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code[:64] if isinstance(code, str) else None


def _remote(body: Any, path: str, *, with_value: bool) -> Remote:
    try:
        return Remote(path=path, version=int(body["version"]), secret_type=str(body.get("secret_type", "generic")),
                      metadata={str(k): str(v) for k, v in (body.get("metadata") or {}).items()},
                      created_at=datetime.fromisoformat(body["created_at"]),
                      updated_at=datetime.fromisoformat(body.get("updated_at") or body["created_at"]),
                      expires_at=datetime.fromisoformat(body["expires_at"]) if body.get("expires_at") else None,
                      value=body.get("value") if with_value else None)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise _Shape("the backend answered a secret in another shape") from None


# -- AWS Secrets Manager ------------------------------------------------------------------------------

class AwsBackend:
    def __init__(self, name: str, config: Mapping[str, Any], credentials: Mapping[str, str],
                 policy: OutboundPolicy) -> None:
        self.name = name
        self.config = config
        self._credentials = credentials
        self.policy = policy
        #: every address the endpoint resolved to (AWS's own for the region without ``endpoint_url``)
        self.reach = Reach(_host(config.get("endpoint_url")))
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def _sm(self, timeout: float) -> Any:
        if self._client is None:
            stack = contextlib.AsyncExitStack()
            config = AioConfig(connect_timeout=timeout, read_timeout=timeout,
                               retries={"total_max_attempts": 1, "mode": "standard"},
                               connector_args={"resolver": GuardedResolver(self.policy, self.reach.lookup()),
                                               "use_dns_cache": False})
            self._client = await stack.enter_async_context(get_session().create_client(
                "secretsmanager", region_name=self.config["region"], endpoint_url=self.config.get("endpoint_url"),
                aws_access_key_id=self._credentials["access_key_id"],
                aws_secret_access_key=self._credentials["secret_access_key"], config=config))
            self._stack = stack
        return self._client

    async def _do(self, timeout: float, operation: str, *, check: bool = False, **kwargs: Any) -> Any:
        try:
            # the client is made before the clock starts: loading botocore's service model is this process's
            # work (over a second, cold, on a busy machine), not the backend's answer the timeout is about
            client = await self._sm(timeout)
            async with asyncio.timeout(timeout):
                return await getattr(client, operation)(**kwargs)
        except (TimeoutError, ConnectTimeoutError, ReadTimeoutError) as exc:
            raise unreachable(self.name, exc, self.reach, timeout=timeout) from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code, status = str(error.get("Code", ""))[:64], int(meta.get("HTTPStatusCode") or 0)
            if code == "ResourceNotFoundException":
                raise Missing() from None
            if code in _THROTTLED or status == 429:
                headers = {k.lower(): v for k, v in (meta.get("HTTPHeaders") or {}).items()}
                raise BackendRateLimited(f"backend '{self.name}' is rate limiting us",
                                         details=shown(self.name, self.reach, status, code),
                                         headers=_retry_after(headers.get("retry-after"))) from None
            if check and code in _REFUSED:
                raise InvalidConfig(f"backend '{self.name}' refused the credentials",
                                    details=shown(self.name, self.reach, status, code)) from None
            raise answered(self.name, self.reach, f"backend '{self.name}' answered {code or status}", status,
                           code) from None
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise unreachable(self.name, exc, self.reach) from None

    async def check(self, timeout: float) -> None:
        await self._do(timeout, "list_secrets", check=True, MaxResults=1)

    async def read(self, path: str, timeout: float) -> Remote:
        got = await self._do(timeout, "get_secret_value", SecretId=path)
        value = got.get("SecretString")
        if value is None and got.get("SecretBinary") is not None:
            value = base64.b64encode(got["SecretBinary"]).decode()
        created = got.get("CreatedDate") or _now()
        return Remote(path=path, version=1, created_at=created, updated_at=created, value=value,
                      metadata={"aws_version_id": str(got.get("VersionId", ""))[:128]})

    async def list(self, prefix: str, cursor: str | None, limit: int, timeout: float
                   ) -> tuple[list[Remote], str | None]:
        kwargs: dict[str, Any] = {"MaxResults": max(1, min(limit, 100)), "SortOrder": "asc"}
        if prefix:
            kwargs["Filters"] = [{"Key": "name", "Values": [prefix]}]
        if cursor:
            kwargs["NextToken"] = cursor
        got = await self._do(timeout, "list_secrets", **kwargs)
        items = []
        for entry in got.get("SecretList", []):
            name = str(entry.get("Name", ""))
            if not name.startswith(prefix):
                continue  # the name filter matches more than a prefix; a list under a prefix shows only those
            created = entry.get("CreatedDate") or _now()
            items.append(Remote(path=name, version=1, created_at=created,
                                updated_at=entry.get("LastChangedDate") or created))
        # Coffer lists in path order; AWS pages by creation: each page is put in path order
        return sorted(items, key=lambda r: r.path), got.get("NextToken")

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
