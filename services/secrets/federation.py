"""Federation (api.md §5.4): backends mounted at a path, read through in Coffer's shapes.

Backends are kept per tenant with their credentials sealed (AES-GCM under a KMS-wrapped data key,
bound to tenant and name; re-wrapped with every other sealed column on KEK rotation). A process
keeps one client per backend and one circuit breaker: after ``threshold`` failures in a row the
backend is answered ``backend_error`` at once (``details.circuit: open``, ``Retry-After``) for
``cooldown`` seconds, then one call is let through to see whether it is back.

Which paths are mounted is read from PostgreSQL and kept for a second per tenant in each process
(a mount created on another replica applies here within that second).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog

from services.secrets.backends import AwsBackend, Backend, CofferBackend, Missing, Remote
from services.secrets.repository import named, named_page
from shared.contracts import parse
from shared.contracts.federation import CREDENTIALS, SHOWN, AwsConfig, BackendCreate, BackendView, CofferConfig
from shared.contracts.secrets import SecretMeta, SecretView, validate_path
from shared.crypto import Sealed, seal, unseal
from shared.durations import parse_duration
from shared.errors import (
    BackendError,
    BackendTimeout,
    CofferError,
    FederationBackendNotFound,
    InvalidConfig,
    NameConflict,
    SecretNotFound,
    ValidationError,
)
from shared.keyring import ServiceKeyring
from shared.outbound import OutboundPolicy, OutboundRefused, check

log = structlog.get_logger("coffer.secrets.federation")

_VIEW = "name, type, mount_path, config, created_at"
MAX_TIMEOUT = 60


def backend_aad(tenant_id: str, name: str) -> bytes:
    return b"\x00".join((b"coffer-federation-v1", tenant_id.encode(), name.encode()))


class Breaker:
    """Consecutive failures open the circuit for ``cooldown`` seconds; a success closes it."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold, self.cooldown = threshold, cooldown
        self.failures = 0
        self.opened_at: float | None = None

    def before(self, name: str) -> None:
        if self.opened_at is None:
            return
        left = self.cooldown - (time.monotonic() - self.opened_at)
        if left > 0:
            raise BackendError(f"backend '{name}' is failing: not asked again for {math.ceil(left)} s",
                               details={"backend": name, "circuit": "open"},
                               headers={"Retry-After": str(math.ceil(left))})
        self.opened_at = None  # half-open: this call finds out; one more failure opens it again

    def record(self, error: CofferError | None) -> None:
        if error is None:
            self.failures, self.opened_at = 0, None
        elif isinstance(error, (BackendError, BackendTimeout)):
            self.failures += 1
            if self.failures >= self.threshold:
                self.opened_at = time.monotonic()


@dataclass
class _Mounted:
    backend: Backend
    breaker: Breaker
    timeout: float


class Federation:
    def __init__(self, pool: asyncpg.Pool, kms: ServiceKeyring, policy: OutboundPolicy, *, threshold: int = 5,
                 cooldown: float = 30.0) -> None:
        self.pool, self.kms, self.policy = pool, kms, policy
        self.threshold, self.cooldown = threshold, cooldown
        self._mounts: dict[str, tuple[float, list[asyncpg.Record]]] = {}
        #: a client per backend, by tenant, name and creation (one deleted and made anew gets a new one)
        self._live: dict[tuple[str, str, Any], _Mounted] = {}

    # -- backends --------------------------------------------------------------------------------

    def _config(self, req: BackendCreate) -> tuple[dict[str, Any], dict[str, str], int]:
        """(shown config, credentials, timeout seconds), or ``invalid_config`` naming the fields."""
        model = CofferConfig if req.type == "coffer" else AwsConfig
        try:
            config = parse(model, req.config).model_dump()
        except ValidationError as exc:
            raise InvalidConfig(f"the {req.type} backend's config is not valid",
                                details={"fields": exc.details.get("fields", [])}) from None
        timeout = parse_duration(config["timeout"], field="config.timeout")
        if timeout > MAX_TIMEOUT:
            raise InvalidConfig(f"config.timeout is at most {MAX_TIMEOUT}s", details={"field": "config.timeout"})
        credentials = {k: config.pop(k) for k in CREDENTIALS[req.type]}
        config.update({k: v for k, v in credentials.items() if k in SHOWN})
        return config, credentials, timeout

    async def _guard(self, req: BackendCreate, config: Mapping[str, Any]) -> None:
        url = config.get("url") if req.type == "coffer" else config.get("endpoint_url")
        if url is None:
            return  # AWS's own endpoint for the region: public
        try:
            await check(url, self.policy)
        except OutboundRefused as exc:
            raise InvalidConfig(f"the backend's URL can't be used: {exc.reason}",
                                details={"field": "url" if req.type == "coffer" else "endpoint_url"}) from None

    def _make(self, name: str, kind: str, config: Mapping[str, Any], credentials: Mapping[str, str]) -> Backend:
        cls = CofferBackend if kind == "coffer" else AwsBackend
        return cls(name, config, credentials, self.policy)

    async def create(self, tenant_id: str, req: BackendCreate) -> BackendView:
        mount = validate_path(req.mount_path)
        config, credentials, timeout = self._config(req)
        await self._guard(req, config)
        backend = self._make(req.name, req.type, config, credentials)
        try:
            await backend.check(timeout)  # unreachable: backend_error; refused: invalid_config
        finally:
            await backend.close()
        sealed = seal(self.kms.tenant(tenant_id), orjson.dumps(credentials), backend_aad(tenant_id, req.name))
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('federation:' || $1))", tenant_id)
            clash = await conn.fetchval(
                "SELECT mount_path FROM federation_backends WHERE tenant_id = $1 AND (mount_path = $2"
                " OR starts_with($2, mount_path || '/') OR starts_with(mount_path, $2 || '/'))", tenant_id, mount)
            if clash is not None:
                raise NameConflict(f"'{mount}' overlaps the mount '{clash}'", details={"mount_path": clash})
            row = await conn.fetchrow(
                "INSERT INTO federation_backends (tenant_id, name, type, mount_path, config, kek_id, wrapped_key,"
                " nonce, ciphertext) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING"
                f" RETURNING {_VIEW}", tenant_id, req.name, req.type, mount, config, sealed.kek_id,
                sealed.wrapped_key, sealed.nonce, sealed.ciphertext)
            if row is None:
                raise NameConflict(f"a federation backend named '{req.name}' exists", details={"name": req.name})
        self._mounts.pop(tenant_id, None)
        log.info("federation_backend_created", tenant_id=tenant_id, backend=req.name, type=req.type, mount=mount)
        return BackendView.model_validate(dict(row))

    async def get(self, tenant_id: str, name: str) -> BackendView:
        row = await named(self.pool, "federation_backends", _VIEW, tenant_id, name)
        if row is None:
            raise _not_found(name)
        return BackendView.model_validate(dict(row))

    async def list_backends(self, tenant_id: str, after: str | None, limit: int) -> list[asyncpg.Record]:
        return await named_page(self.pool, "federation_backends", _VIEW, tenant_id, after, limit)

    async def delete(self, tenant_id: str, name: str) -> None:
        if await self.pool.fetchval("DELETE FROM federation_backends WHERE tenant_id = $1 AND name = $2 RETURNING 1",
                                    tenant_id, name) is None:
            raise _not_found(name)
        self._mounts.pop(tenant_id, None)
        for key in [k for k in self._live if k[:2] == (tenant_id, name)]:
            await self._live.pop(key).backend.close()

    async def close(self) -> None:
        for live in self._live.values():
            await live.backend.close()
        self._live.clear()

    # -- reads under a mount ---------------------------------------------------------------------

    async def mount_of(self, tenant_id: str, path: str) -> asyncpg.Record | None:
        """The mount ``path`` (or a list prefix) falls under, if any."""
        cached = self._mounts.get(tenant_id)
        if cached is None or cached[0] < time.monotonic():
            rows = list(await self.pool.fetch(
                "SELECT name, type, mount_path, config, kek_id, wrapped_key, nonce, ciphertext, created_at"
                " FROM federation_backends WHERE tenant_id = $1", tenant_id))
            self._mounts[tenant_id] = cached = (time.monotonic() + 1.0, rows)
        return next((m for m in cached[1] if path == m["mount_path"] or path.startswith(m["mount_path"] + "/")),
                    None)

    def _mounted(self, tenant_id: str, mount: asyncpg.Record) -> _Mounted:
        key = (tenant_id, mount["name"], mount["created_at"])
        live = self._live.get(key)
        if live is None:
            sealed = Sealed(mount["kek_id"], mount["wrapped_key"], mount["nonce"], mount["ciphertext"])
            credentials = orjson.loads(unseal(self.kms.tenant(tenant_id), sealed,
                                              backend_aad(tenant_id, mount["name"])))
            config = mount["config"]
            live = _Mounted(self._make(mount["name"], mount["type"], config, credentials),
                            Breaker(self.threshold, self.cooldown), float(parse_duration(config["timeout"])))
            self._live[key] = live
        return live

    async def _through(self, tenant_id: str, mount: asyncpg.Record, deadline: float | None, call: Any) -> Any:
        live = self._mounted(tenant_id, mount)
        live.breaker.before(mount["name"])
        timeout = live.timeout
        if deadline is not None:  # answer before the caller's RPC gives up
            timeout = max(0.05, min(timeout, deadline - time.time() - 0.25))
        try:
            result = await call(live.backend, timeout)
        except CofferError as exc:
            live.breaker.record(exc)
            log.warning("federation_backend_failed", tenant_id=tenant_id, backend=mount["name"], error=exc.code)
            raise
        live.breaker.record(None)
        return result

    async def read(self, tenant_id: str, mount: asyncpg.Record, path: str, deadline: float | None) -> SecretView:
        rest = path[len(mount["mount_path"]) + 1:]
        if not rest:
            raise SecretNotFound(f"Secret '{path}' not found", details={"path": path})
        try:
            remote = await self._through(tenant_id, mount, deadline, lambda b, t: b.read(rest, t))
        except Missing:
            raise SecretNotFound(f"Secret '{path}' not found", details={"path": path, "backend": mount["name"]}) \
                from None
        return SecretView.model_validate({**_meta(remote, mount), "value": remote.value})

    async def list_under(self, tenant_id: str, mount: asyncpg.Record, prefix: str, cursor: str | None, limit: int,
                   deadline: float | None) -> tuple[list[SecretMeta], str | None]:
        rest = prefix[len(mount["mount_path"]) + 1:] if prefix != mount["mount_path"] else ""
        try:
            items, nxt = await self._through(tenant_id, mount, deadline, lambda b, t: b.list(rest, cursor, limit, t))
        except Missing:
            return [], None
        return [SecretMeta.model_validate(_meta(r, mount)) for r in items], nxt


def _meta(remote: Remote, mount: Mapping[str, Any]) -> dict[str, Any]:
    return {"path": f"{mount['mount_path']}/{remote.path}", "version": remote.version,
            "secret_type": remote.secret_type, "metadata": remote.metadata, "expires_at": remote.expires_at,
            "created_at": remote.created_at, "created_by": None, "updated_at": remote.updated_at,
            "deleted_at": None, "purge_after": None, "backend": mount["name"]}


def _not_found(name: str) -> FederationBackendNotFound:
    return FederationBackendNotFound(f"federation backend '{name[:200]}' not found", details={"name": name[:200]})
