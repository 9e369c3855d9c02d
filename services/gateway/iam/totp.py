"""TOTP (RFC 6238) for step-up MFA: secrets sealed at rest, each code usable once."""

from __future__ import annotations

import time
from typing import Literal

from cryptography.hazmat.primitives.hashes import SHA1
from cryptography.hazmat.primitives.twofactor import InvalidToken
from cryptography.hazmat.primitives.twofactor.totp import TOTP

from services.gateway.iam.models import TOTP_DIGITS, TOTP_STEP
from services.gateway.iam.repository import IamRepository
from shared.crypto import unseal
from shared.keyring import ServiceKeyring


def totp_aad(identity_id: str) -> bytes:
    return f"gateway/totp/{identity_id}".encode()


def totp(secret: bytes) -> TOTP:
    return TOTP(secret, TOTP_DIGITS, SHA1(), TOTP_STEP, enforce_key_length=False)


def totp_step(secret: bytes, code: str, now: float) -> int | None:
    """The time step ``code`` is valid for (±1 step of clock drift), or ``None``."""
    for drift in (0, -1, 1):
        at = int(now + drift * TOTP_STEP)
        try:
            totp(secret).verify(code.encode(), at)
        except InvalidToken:
            continue
        return at // TOTP_STEP
    return None


#: what checking a code found: accepted, no factor enrolled, or a wrong (or already used) code
Verdict = Literal["ok", "not_enrolled", "invalid_code"]


async def totp_verdict(repo: IamRepository, kms: ServiceKeyring, identity_id: str, code: str) -> Verdict:
    """Check a code of ``identity_id``; a code whose step was already used is refused (replay).

    Whether a factor is enrolled is told only to the identity itself (its step-up): a login answers alike
    for both failures, else it would tell a password guesser which users have a second factor.
    """
    found = await repo.totp(identity_id)
    if found is None:
        return "not_enrolled"
    tenant_id, sealed = found
    step = totp_step(unseal(kms.tenant(tenant_id), sealed, totp_aad(identity_id)), code, time.time())
    return "ok" if step is not None and await repo.claim_totp_step(identity_id, step) else "invalid_code"


async def check_totp(repo: IamRepository, kms: ServiceKeyring, identity_id: str, code: str) -> bool:
    """Whether ``code`` is a valid, unused code of ``identity_id`` (false too when nothing is enrolled)."""
    return await totp_verdict(repo, kms, identity_id, code) == "ok"
