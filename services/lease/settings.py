"""The lease service's settings, on top of every process's (``shared.config.Settings``).

Dynamic-credential engines live on private networks, so the outbound guard
for them is its own: ``COFFER_ENGINE_ALLOWED_CIDRS`` names the only address
ranges an engine may point at (nothing else, public addresses included).
Empty — the default — allows no engine anywhere: an operator opts in.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.config import Settings, check_cidrs, comma_separated


class LeaseSettings(Settings):
    #: address ranges engines may connect to (``10.0.0.0/8,127.0.0.0/8``); none by default
    engine_allowed_cidrs: Annotated[tuple[str, ...], NoDecode] = ()
    #: seconds between looks for expired leases and due retries (expiry is acted on within about this)
    lease_sweep_interval: float = Field(1.0, gt=0, le=60)
    #: revocations running at once (each holds a connection to its target)
    lease_revoke_concurrency: int = Field(8, ge=1, le=256)
    #: seconds a target may take to connect or to answer one operation
    engine_timeout: float = Field(10.0, gt=0, le=60)
    #: connections one engine may hold open to its target, per replica
    engine_connections: int = Field(8, ge=1, le=100)

    _split_engines = field_validator("engine_allowed_cidrs", mode="before")(comma_separated)
    _check_engines = field_validator("engine_allowed_cidrs")(check_cidrs)
