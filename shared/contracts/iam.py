"""RPC contracts of the gateway's ``iam`` service (``iam.<method>``): questions other services ask it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Check(_Model):
    """May ``identity_id`` do ``capability`` on ``resource`` now (no client address, no MFA)?"""

    identity_id: StrictStr = Field(min_length=1, max_length=64)
    resource: StrictStr = Field(min_length=1, max_length=1024)
    capability: StrictStr = Field(min_length=1, max_length=32)


class MayRequest(_Model):
    """``iam.may``: several checks in one round trip."""

    checks: list[Check] = Field(max_length=1000)


class MayResult(_Model):
    """One answer per check, in order."""

    allowed: list[bool]
