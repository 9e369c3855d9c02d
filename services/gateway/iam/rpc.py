"""``iam.*``: what other services may ask the gateway over the bus."""

from __future__ import annotations

from services.gateway.iam.authorizer import StandingPolicy
from shared.context import RequestContext
from shared.contracts import handles
from shared.contracts.iam import MAY, MayRequest, MayResult


class IamHandlers:
    def __init__(self, standing: StandingPolicy) -> None:
        self.standing = standing

    @handles(MAY)
    async def may(self, req: MayRequest, ctx: RequestContext) -> MayResult:
        """May each identity do each thing now? (the webhook dispatcher asks before delivering)"""
        return MayResult(allowed=[await self.standing.may(c.identity_id, c.resource, c.capability)
                                  for c in req.checks])

