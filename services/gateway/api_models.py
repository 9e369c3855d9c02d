"""Query-string models of the gateway's routes (validation and the OpenAPI description)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = Field(None, max_length=2000)


class SecretListQuery(PageQuery):
    prefix: str = Field("", max_length=512)


class SecretGetQuery(PageQuery):
    #: a given version (``GET /v1/secrets/{path}``); ``limit``/``cursor`` page ``:versions``
    version: int | None = Field(None, ge=1, le=2**31 - 1)
