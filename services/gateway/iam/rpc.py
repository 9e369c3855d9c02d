"""``iam.*``: what other services may ask the gateway over the bus."""

from __future__ import annotations

from typing import Any

from services.gateway.iam.authorizer import StandingPolicy
from services.gateway.iam.tokens import signing_key_aad
from services.gateway.system.repository import SystemRepository
from shared.context import RequestContext
from shared.contracts import handles
from shared.contracts.iam import MAY, MayRequest, MayResult
from shared.crypto import KmsProvider


class IamHandlers:
    def __init__(self, standing: StandingPolicy, system: SystemRepository, kms: KmsProvider) -> None:
        self.standing = standing
        self.system = system
        self.kms = kms

    @handles(MAY)
    async def may(self, req: MayRequest, ctx: RequestContext) -> MayResult:
        """May each identity do each thing now? (the webhook dispatcher asks before delivering)"""
        return MayResult(allowed=[await self.standing.may(c.identity_id, c.resource, c.capability)
                                  for c in req.checks])

    async def rewrap(self, payload: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        moved = await self.system.rewrap_keys(self.kms, self.system.schema, signing_key_aad)
        return {"kek_id": self.kms.active_key_id, "rewrapped": moved}
