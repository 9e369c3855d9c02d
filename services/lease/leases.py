"""What the lease service does with targets: engines checked and kept, users made, users removed.

- ``Engines`` builds an engine from its row (the secret part unsealed only
  here) and keeps it — with its connections — while the row is unchanged; a
  row changed on another replica (a rotated admin password) makes a new one.
- ``Leases`` runs credentials (row first, then the user, then active),
  revocation (held row, then the target, then ended) and is the sweeper's
  leased queue: expired leases and due retries claimed with ``SKIP LOCKED``,
  retried with backoff while a target is down, never ended before the target
  said the user is gone.

Target failures become the vocabulary's codes with messages of our own; what
a target said is logged by error class only.
"""

from __future__ import annotations

import contextlib
import secrets
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import structlog

from services.lease.engines import ENGINE_TYPES
from services.lease.engines.base import (
    Engine,
    Reach,
    TargetDown,
    TargetRefused,
    TargetRejected,
    TargetTls,
    new_password,
    new_username,
)
from services.lease.repository import LeaseRepository, Row
from shared.context import new_request_id
from shared.crypto import Sealed, seal, unseal
from shared.errors import CofferError, EngineUnreachable, InvalidConfig, InvalidRole
from shared.jobs import backoff
from shared.keyring import ServiceKeyring

log = structlog.get_logger("coffer.lease")


#: what every failure to reach an engine's target says, whichever it was
UNREACHABLE = "could not connect to the engine's server"


def engine_aad(tenant_id: str, name: str) -> bytes:
    return f"lease-engine:{tenant_id}:{name}".encode()


@contextlib.contextmanager
def target_errors(engine: str, action: str, *, rejected: type[CofferError] = InvalidRole) -> Iterator[None]:
    """A target's failure as the vocabulary's code (``engine_unreachable``, ``invalid_config``, ``rejected``)."""
    try:
        yield
    except TargetTls as exc:
        log.warning("engine_unreachable", engine=engine, action=action, error="tls")
        raise EngineUnreachable(f"engine '{engine}': the TLS connection failed: {exc.hint}",
                                details={"engine": engine, "reason": "tls"}) from None
    except TargetDown as exc:
        # one answer whatever the cause (closed, silent, another server): the cause in the log only
        log.warning("engine_unreachable", engine=engine, action=action, error=str(exc))
        raise EngineUnreachable(f"engine '{engine}': {UNREACHABLE}", details={"engine": engine}) from None
    except TargetRefused as exc:
        log.warning("engine_refused", engine=engine, action=action)
        raise InvalidConfig(f"engine '{engine}': {exc}", details={"engine": engine}) from None
    except TargetRejected as exc:
        log.warning("engine_rejected", engine=engine, action=action, cause=exc.cause or None, **exc.details)
        raise rejected(f"engine '{engine}': {exc}", details={"engine": engine, **exc.details}) from None


class Engines:
    """Engines by row, kept while their row is unchanged (at most ``keep`` at a time per replica)."""

    def __init__(self, kms: ServiceKeyring, reach: Reach, keep: int = 64) -> None:
        self.kms = kms
        self.reach = reach
        self.keep = keep
        self._open: OrderedDict[tuple[str, str], tuple[datetime, Engine]] = OrderedDict()

    def seal(self, tenant_id: str, name: str, secret: dict[str, Any]) -> Sealed:
        return seal(self.kms.tenant(tenant_id), orjson.dumps(secret), engine_aad(tenant_id, name))

    def build(self, kind: str, public: dict[str, Any], secret: dict[str, Any]) -> Engine:
        return ENGINE_TYPES[kind](public, secret, self.reach)

    async def of(self, row: Row) -> Engine:
        key = (row["tenant_id"], row["name"])
        held = self._open.get(key)
        if held is not None and held[0] == row["updated_at"]:
            self._open.move_to_end(key)
            return held[1]
        sealed = Sealed(row["kek_id"], row["wrapped_key"], row["nonce"], row["ciphertext"])
        secret = orjson.loads(unseal(self.kms.tenant(row["tenant_id"]), sealed, engine_aad(*key)))
        engine = self.build(row["type"], row["config"], secret)
        if held is not None:
            await held[1].close()
        self._open[key] = (row["updated_at"], engine)
        while len(self._open) > self.keep:
            _, (_, oldest) = self._open.popitem(last=False)
            await oldest.close()
        return engine

    async def drop(self, tenant_id: str, name: str) -> None:
        held = self._open.pop((tenant_id, name), None)
        if held is not None:
            await held[1].close()

    async def close(self) -> None:
        while self._open:
            _, (_, engine) = self._open.popitem()
            await engine.close()


class Leases:
    """Credentials and revocation against targets; the sweeper's leased queue (``shared.jobs.QueueRunner``)."""

    def __init__(self, repo: LeaseRepository, engines: Engines) -> None:
        self.repo = repo
        self.engines = engines

    # -- engines -----------------------------------------------------------------------------

    async def check_new(self, kind: str, raw: dict[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new engine's config parsed and tried against its target; ``(public, secret)``."""
        public, secret = ENGINE_TYPES[kind].parse_config(raw)
        engine = self.engines.build(kind, public, secret)
        try:
            with target_errors(name, "check", rejected=InvalidConfig):
                await engine.check()
        finally:
            await engine.close()
        return public, secret

    async def rotate_admin(self, row: Row) -> Row:
        """A new admin password, set in the target and kept (sealed) here only."""
        engine = await self.engines.of(row)
        password = new_password()
        with target_errors(row["name"], "rotate", rejected=InvalidConfig):
            await engine.rotate_admin(password)
        sealed = self.engines.seal(row["tenant_id"], row["name"], {**engine.secret, "password": password})
        updated = await self.repo.replace_engine_secret(row["tenant_id"], row["name"], sealed)
        await self.engines.drop(row["tenant_id"], row["name"])
        log.info("engine_admin_rotated", engine=row["name"], tenant_id=row["tenant_id"])
        return updated

    # -- credentials -------------------------------------------------------------------------------

    async def create(self, engine_row: Row, role: Row | dict[str, Any], ttl: int, max_ttl: int, request_id: str,
                     max_leases: int | None) -> tuple[dict[str, Any], str]:
        """A user in the target and its lease: ``(lease, password)``."""
        # the role as the operator's limits stand now (they may have narrowed since it was written)
        ENGINE_TYPES[engine_row["type"]].role_spec(dict(role["spec"]), self.engines.reach.limits)
        now = datetime.now(UTC).replace(microsecond=0)
        lease = {"id": "lea_" + secrets.token_hex(12), "tenant_id": engine_row["tenant_id"],
                 "engine": engine_row["name"], "role": role["name"],
                 "username": new_username(role["name"]), "spec": role["spec"],
                 "issued_at": now, "expires_at": now + timedelta(seconds=ttl),
                 "max_expires_at": now + timedelta(seconds=max_ttl)}
        await self.repo.begin_lease(lease, max_leases)
        engine = await self.engines.of(engine_row)
        password = new_password()
        try:
            with target_errors(engine_row["name"], "create"):
                await engine.create_user(role["spec"], lease["username"], password, lease["max_expires_at"])
        except BaseException:
            await self._undo(engine, lease)
            raise
        await self.repo.activate(lease, request_id)
        log.info("lease_created", lease_id=lease["id"], engine=lease["engine"], role=lease["role"],
                 tenant_id=lease["tenant_id"])
        return lease, password

    async def _undo(self, engine: Engine, lease: dict[str, Any]) -> None:
        """A creation that failed part-way: its user removed now, or by the sweeper when its hold ends."""
        try:
            await engine.revoke_user(lease["spec"], lease["username"])
        except Exception as exc:  # noqa: BLE001 - the row stays: the sweeper retries the removal
            log.warning("lease_undo_failed", lease_id=lease["id"], error=type(exc).__name__)
            return
        await self.repo.forget(lease["id"])

    # -- revocation --------------------------------------------------------------------------------

    async def revoke(self, tenant_id: str, lease_id: str, request_id: str) -> Row:
        """Remove the lease's user now; while its target is down, ``engine_unreachable`` and retries."""
        row, mine = await self.repo.start_revoke(tenant_id, lease_id)
        if not mine:
            return row
        ended = await self._remove(row, request_id)
        if ended is None:
            raise EngineUnreachable(f"engine '{row['engine']}': {UNREACHABLE}; the lease is revoked as soon as"
                                    " it can be", details={"engine": row["engine"], "lease_id": row["id"],
                                                           "status": "revoking"})
        return ended

    async def _remove(self, row: Row, request_id: str) -> Row | None:
        """The user gone from the target, then the lease ended; ``None`` (a retry scheduled) if not."""
        engine_row = await self.repo.engine_for_lease(row["tenant_id"], row["engine"])
        try:
            if engine_row is None:
                raise TargetRejected("the engine is gone")
            engine = await self.engines.of(engine_row)
            await engine.revoke_user(row["spec"], row["username"])
        except (TargetDown, TargetRefused, TargetRejected, OSError, TimeoutError) as exc:
            attempt = row["attempts"] + 1
            delay = backoff(attempt, base=1.0, cap=300.0)
            await self.repo.retry_later(row["id"], delay, type(exc).__name__)
            log.warning("lease_revoke_failed", lease_id=row["id"], engine=row["engine"], attempt=attempt,
                        retry_in=round(delay, 1), error=type(exc).__name__)
            return None
        ended = await self.repo.ended(row, request_id)
        log.info("lease_ended", lease_id=row["id"], engine=row["engine"], status=ended["status"],
                 late=round((datetime.now(UTC) - row["expires_at"]).total_seconds(), 3)
                 if ended["status"] == "expired" else None)
        return ended

    # -- the sweeper's queue -------------------------------------------------------------------------

    async def claim(self, free: int) -> list[Row]:
        return await self.repo.claim_due(free)

    async def work(self, item: Row) -> None:
        await self._remove(item, new_request_id())
