"""RPC contracts of the gateway's ``iam`` service (``iam.<method>``): questions other services ask it."""

from __future__ import annotations

from pydantic import Field, StrictStr

from shared.context import RequestContext
from shared.contracts import Contract, Method, ServiceClient


class Check(Contract):
    """May ``identity_id`` do ``capability`` on ``resource`` now (no client address, no MFA)?"""

    identity_id: StrictStr = Field(min_length=1, max_length=64)
    resource: StrictStr = Field(min_length=1, max_length=1024)
    capability: StrictStr = Field(min_length=1, max_length=32)


class MayRequest(Contract):
    """``iam.may``: several checks in one round trip."""

    checks: list[Check] = Field(max_length=1000)


class MayResult(Contract):
    """One answer per check, in order."""

    allowed: list[bool]


MAY = Method("iam", "may", MayRequest, MayResult)


class IamClient(ServiceClient):
    """The gateway's identity questions, over the bus."""

    async def may(self, ctx: RequestContext, request: MayRequest) -> MayResult:
        return await self._call(MAY, ctx, request)
