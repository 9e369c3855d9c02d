"""RPC contracts of the ``webhooks`` service (``webhooks.<method>``) and its typed client.

The gateway validates HTTP bodies with the same models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictBool, StrictStr

from shared.context import RequestContext
from shared.contracts import Contract, Empty, Method, Page, PageRequest, ServiceClient
from shared.globs import MAX_PATTERN

EVENT_PATTERN = r"^(\*|#|[a-z][a-z0-9_]*)(\.(\*|#|[a-z][a-z0-9_]*))*$"


class WebhookCreate(Contract):
    url: StrictStr = Field(max_length=2048)
    description: StrictStr | None = Field(None, max_length=1000)
    enabled: StrictBool = True


class WebhookPatch(Contract):
    url: StrictStr | None = Field(None, max_length=2048)
    description: StrictStr | None = Field(None, max_length=1000)
    enabled: StrictBool | None = None


class WebhookChange(WebhookPatch):
    """``webhooks.patch``: the fields to change of webhook ``id``."""

    id: StrictStr = Field(max_length=64)


class SubscriptionCreate(Contract):
    webhook_id: StrictStr = Field(min_length=1, max_length=64)
    event_types: list[Annotated[StrictStr, Field(pattern=EVENT_PATTERN, max_length=200)]] = Field(
        min_length=1, max_length=20)
    path_pattern: StrictStr | None = Field(None, max_length=MAX_PATTERN)


class Ref(Contract):
    """A webhook or a subscription by id."""

    id: StrictStr = Field(max_length=64)


class DeliveryRef(Contract):
    webhook_id: StrictStr = Field(max_length=64)
    id: StrictStr = Field(max_length=64)


class ListDeliveries(PageRequest):
    webhook_id: StrictStr = Field(max_length=64)


class WebhookView(Contract):
    id: str
    url: str
    description: str | None
    enabled: bool
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookView):
    """A webhook with its signing secret: the answer of create and ``:rotate-secret`` only."""

    secret: str = Field(repr=False)
    #: after a rotation, until when the previous secret signs beside the new one
    previous_secret_valid_until: datetime | None = None


class SubscriptionView(Contract):
    id: str
    webhook_id: str
    event_types: list[str]
    path_pattern: str | None
    created_at: datetime


class DeliveryView(Contract):
    id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    created_at: datetime


class Attempt(Contract):
    at: datetime
    response_status: int | None
    error_code: str | None
    duration_ms: int
    #: at most 1 KiB of the receiver's answer, none from one reached through the operator's private allow-list;
    #: "could not connect" when there was no answer (whatever the cause)
    response_body: str | None
    #: the answer's content-type and retry-after, when it had them
    response_headers: dict[str, str] | None = None


class DeliveryDetail(DeliveryView):
    attempts: list[Attempt]


class Ping(Contract):
    delivery_id: str


SERVICE = "webhooks"
CREATE = Method(SERVICE, "create", WebhookCreate, WebhookWithSecret)
GET = Method(SERVICE, "get", Ref, WebhookView)
LIST = Method(SERVICE, "list", PageRequest, Page[WebhookView])
PATCH = Method(SERVICE, "patch", WebhookChange, WebhookView)
DELETE = Method(SERVICE, "delete", Ref, Empty)
PING = Method(SERVICE, "send_ping", Ref, Ping)
ROTATE_SECRET = Method(SERVICE, "rotate_secret", Ref, WebhookWithSecret)
SUBSCRIBE = Method(SERVICE, "sub_create", SubscriptionCreate, SubscriptionView)
SUBSCRIPTION = Method(SERVICE, "sub_get", Ref, SubscriptionView)
SUBSCRIPTIONS = Method(SERVICE, "sub_list", PageRequest, Page[SubscriptionView])
UNSUBSCRIBE = Method(SERVICE, "sub_delete", Ref, Empty)
DELIVERIES = Method(SERVICE, "deliveries", ListDeliveries, Page[DeliveryView])
DELIVERY = Method(SERVICE, "delivery", DeliveryRef, DeliveryDetail)
RETRY = Method(SERVICE, "retry", DeliveryRef, DeliveryDetail)


class WebhooksClient(ServiceClient):
    """The webhook dispatcher's API, over the bus."""

    async def create(self, ctx: RequestContext, request: WebhookCreate) -> WebhookWithSecret:
        return await self._call(CREATE, ctx, request)

    async def get(self, ctx: RequestContext, request: Ref) -> WebhookView:
        return await self._call(GET, ctx, request)

    async def list(self, ctx: RequestContext, request: PageRequest) -> Page[WebhookView]:
        return await self._call(LIST, ctx, request)

    async def patch(self, ctx: RequestContext, request: WebhookChange) -> WebhookView:
        return await self._call(PATCH, ctx, request)

    async def delete(self, ctx: RequestContext, request: Ref) -> None:
        await self._call(DELETE, ctx, request)

    async def ping(self, ctx: RequestContext, request: Ref) -> Ping:
        return await self._call(PING, ctx, request)

    async def rotate_secret(self, ctx: RequestContext, request: Ref) -> WebhookWithSecret:
        return await self._call(ROTATE_SECRET, ctx, request)

    async def subscribe(self, ctx: RequestContext, request: SubscriptionCreate) -> SubscriptionView:
        return await self._call(SUBSCRIBE, ctx, request)

    async def subscription(self, ctx: RequestContext, request: Ref) -> SubscriptionView:
        return await self._call(SUBSCRIPTION, ctx, request)

    async def subscriptions(self, ctx: RequestContext, request: PageRequest) -> Page[SubscriptionView]:
        return await self._call(SUBSCRIPTIONS, ctx, request)

    async def unsubscribe(self, ctx: RequestContext, request: Ref) -> None:
        await self._call(UNSUBSCRIBE, ctx, request)

    async def deliveries(self, ctx: RequestContext, request: ListDeliveries) -> Page[DeliveryView]:
        return await self._call(DELIVERIES, ctx, request)

    async def delivery(self, ctx: RequestContext, request: DeliveryRef) -> DeliveryDetail:
        return await self._call(DELIVERY, ctx, request)

    async def retry(self, ctx: RequestContext, request: DeliveryRef) -> DeliveryDetail:
        return await self._call(RETRY, ctx, request)

