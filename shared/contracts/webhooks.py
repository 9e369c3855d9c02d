"""RPC contracts of the ``webhooks`` service (``webhooks.<method>``); the gateway validates bodies with them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from shared.globs import MAX_PATTERN

EVENT_PATTERN = r"^(\*|#|[a-z][a-z0-9_]*)(\.(\*|#|[a-z][a-z0-9_]*))*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookCreate(_Model):
    url: StrictStr = Field(max_length=2048)
    description: StrictStr | None = Field(None, max_length=1000)
    enabled: StrictBool = True


class WebhookPatch(_Model):
    url: StrictStr | None = Field(None, max_length=2048)
    description: StrictStr | None = Field(None, max_length=1000)
    enabled: StrictBool | None = None


class SubscriptionCreate(_Model):
    webhook_id: StrictStr = Field(min_length=1, max_length=64)
    event_types: list[StrictStr] = Field(min_length=1, max_length=20)
    path_pattern: StrictStr | None = Field(None, max_length=MAX_PATTERN)


class Ref(_Model):
    """A webhook / subscription / delivery by id, with list paging."""

    id: StrictStr = Field("", max_length=64)
    webhook_id: StrictStr = Field("", max_length=64)
    limit: StrictInt = Field(100, ge=1, le=1000)
    cursor: StrictStr | None = Field(None, max_length=2000)
    #: the tenant's max_webhooks quota, filled in by the gateway on create
    max_webhooks: StrictInt | None = Field(None, ge=0)
