"""The seal as the running (unsealed) gateway sees it: seal-status, ``sys/seal``, and what unsealing leaves behind.

The process's seal is ``shared.custody``'s (installed by the process's main: embedded mode, or a
distributed gateway). A platform started without one (``COFFER_SEAL=file``, the tests' platforms) is
never sealed and ``sys/seal`` is refused there: the clear key file would open it again at once.

Once unsealed, the platform gets what happened while it could not: the ``system.unsealed`` event (the
gateway's outbox, so webhook subscribers hear of it) and one audit entry per unseal attempt made while
sealed (the root tenant's log; outcome and reason, never the share). ``sys/seal`` writes
``system.sealed`` before the platform stops (the relay sends it, at the latest after the next unseal).
Both events are the root tenant's (``tenant_id``), so its webhook subscriptions can receive them; an
installation not initialised yet has no root tenant and they go out tenant-less (the bus only).
"""

from __future__ import annotations

from typing import Any

import structlog

from services.gateway.state import GatewayState
from shared import custody as custody_mod
from shared.config import Settings
from shared.context import RequestContext
from shared.contracts.events import Event
from shared.db import outbox
from shared.errors import InvalidRequest, ServiceUnavailable
from shared.seal import SealError, SealUnavailable

log = structlog.get_logger("coffer.seal")


def status(settings: Settings) -> dict[str, Any]:
    """``GET /v1/sys/seal-status`` of a running gateway: unsealed; the threshold of a shamir seal."""
    custody = custody_mod.installed()
    if custody is None:
        return {"sealed": False, "type": settings.seal, "initialized": True, "progress": 0, "threshold": None}
    return custody.status()


async def _event(st: GatewayState, kind: str, request_id: str | None, data: dict[str, Any]) -> None:
    """One ``system.*`` event in the gateway's outbox, in the root tenant's name (its webhooks may subscribe)."""
    tenant_id = await root_tenant(st)
    async with st.system.pool.acquire() as conn, conn.transaction():
        await outbox.add(conn, Event(type=kind, tenant_id=tenant_id, request_id=request_id, data=data),
                         schema=st.schema)


async def request_seal(st: GatewayState, ctx: RequestContext) -> dict[str, Any]:
    """``POST /v1/sys/seal``: ``system.sealed`` in the outbox, then ask the process to stop and seal.

    ``COFFER_SEAL=file`` (no custody): nothing to seal, the clear key file would open it again at once;
    the answer says so (``sealed: false``) rather than failing: no error code of the vocabulary means
    "this seal can't be closed", and the call changes nothing."""
    custody = custody_mod.installed()
    if custody is None or custody.sealed:
        return {"sealed": False, "type": st.settings.seal,
                "message": f"COFFER_SEAL={st.settings.seal}: nothing to seal (the key file would open it again at "
                           "once); choose another seal to be able to seal"}
    await _event(st, "system.sealed", ctx.request_id, {"type": custody.type, "by": ctx.identity_id})
    log.warning("seal_requested", seal=custody.type, identity_id=ctx.identity_id, request_id=ctx.request_id)
    custody.seal_requested.set()
    return {"sealed": True, "type": custody.type}


async def rotate_root(st: GatewayState, ctx: RequestContext, shares: int | None,
                      threshold: int | None) -> dict[str, Any]:
    """``POST /v1/sys/rotate-root``: a new root key from this process's seal; ``system.root_rotated``.

    Refused with the ``file`` seal (no custody: the key file is the root, move it into a seal first). The
    service keyrings are not touched: only the root keyring, which wraps their shares, is re-sealed.
    Other processes keep the keys they opened; an auto-sealed process restarted later unseals the new
    root key by itself, and with shamir only the new shares open the platform after a restart or a seal."""
    custody = custody_mod.installed()
    if custody is None:
        raise InvalidRequest(f"COFFER_SEAL={st.settings.seal} has no root key to rotate: move the key file into a "
                             "seal first (python -m shared.seal migrate --to shamir|awskms|pkcs11)",
                             details={"seal": st.settings.seal})
    if custody.type != "shamir" and (shares is not None or threshold is not None):
        raise InvalidRequest("secret_shares and secret_threshold are for a shamir seal",
                             details={"seal": custody.type})
    if shares is not None and threshold is not None and threshold > shares:
        raise InvalidRequest("secret_threshold can't be more than secret_shares", details={"seal": custody.type})
    try:
        made = await custody.rotate_root(shares, threshold)
    except SealUnavailable as exc:
        raise ServiceUnavailable("the seal can't be used now: the root key is unchanged",
                                 details={"reason": exc.reason}) from None
    except SealError as exc:
        raise InvalidRequest(f"the root key can't be rotated: {exc.reason}", details={"reason": exc.reason}) from None
    await _event(st, "system.root_rotated", ctx.request_id, {"type": custody.type, "by": ctx.identity_id})
    log.warning("root_key_rotated", seal=custody.type, identity_id=ctx.identity_id, request_id=ctx.request_id)
    answer: dict[str, Any] = {"type": custody.type, "rotated": True}
    if made is not None:
        threshold_now = custody.threshold
        answer.update(unseal_shares=made, secret_shares=len(made), secret_threshold=threshold_now)
    return answer


async def root_tenant(st: GatewayState) -> str | None:
    value = await st.system.pool.fetchval("SELECT id FROM tenants WHERE parent_id IS NULL ORDER BY created_at LIMIT 1")
    return str(value) if value else None


async def after_unseal(st: GatewayState, custody: custody_mod.Custody) -> None:
    """``system.unsealed`` and the unseal attempts made while sealed, now that the platform runs."""
    await _event(st, "system.unsealed", None,
                 {"type": custody.type, "how": custody.how,
                  "took_ms": round(custody.took * 1000, 1) if custody.took is not None else None})
    attempts, dropped = custody.take_attempts()
    if not attempts and not dropped:
        return
    tenant_id = await root_tenant(st)
    if tenant_id is None:
        log.warning("unseal_attempts_not_audited", attempts=len(attempts), reason="no root tenant yet")
        return
    for attempt in attempts:
        # the entry's time is when it is written; the attempt's own time is in the action
        await st.audit.record(
            tenant_id=tenant_id, identity_id=None, resource="sys/seal", outcome=attempt.outcome,
            status=attempt.status, client_ip=attempt.client_ip, request_id=attempt.request_id,
            action=f"POST /v1/sys/unseal ({attempt.reason or attempt.outcome}, while sealed, at "
                   f"{attempt.at.strftime('%Y-%m-%dT%H:%M:%S.%fZ')})")
    if dropped:
        log.warning("unseal_attempts_dropped", count=dropped, kept=len(attempts))
