"""The AsyncAPI 3.0 description of Coffer's events (``GET /v1/asyncapi.json``), made from the models that
check every published event (``shared.contracts.event_types``): one channel per event type, on the topic
exchange ``coffer.events`` with the type as routing key (what a provisioned consumer binds its queue to), and
the event stream ``GET /v1/events`` as a second server. Each message's payload is the event envelope with
its type's ``data``."""

from __future__ import annotations

from typing import Any

from shared.bus.base import EVENTS_EXCHANGE
from shared.contracts.event_types import EVENT_TYPES, EventData

ASYNCAPI = "3.0.0"
AMQP_BINDING = "0.3.0"


def _data_schema(model: type[EventData], schemas: dict[str, Any]) -> dict[str, Any]:
    """``model``'s JSON Schema; the models it nests go to ``schemas`` beside it."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(schema.pop("$defs", {}))
    schema.pop("title", None)
    return schema


def envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of an event of ``event_type`` whose ``data`` is ``data`` (a schema)."""
    return {
        "type": "object", "additionalProperties": False,
        "required": ["id", "type", "tenant_id", "occurred_at", "request_id", "data"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "the event's id: deduplicate on it; the "
                                                                      "event stream's `id:` and `Last-Event-ID`"},
            "type": {"const": event_type},
            "tenant_id": {"type": ["string", "null"], "description": "the tenant it happened in"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "request_id": {"type": ["string", "null"], "description": "the request that caused it"},
            "data": data,
        },
    }


def _key(event_type: str) -> str:
    return event_type.replace(".", "_")


def document(version: str) -> dict[str, Any]:
    """The whole description (a dict, for JSON)."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for event_type, described in sorted(EVENT_TYPES.items()):
        key = _key(event_type)
        model = described.data
        if model.__name__ not in schemas:
            schemas[model.__name__] = _data_schema(model, schemas)
        schemas[key] = envelope(event_type, {"$ref": f"#/components/schemas/{model.__name__}"})
        messages[key] = {
            "name": event_type, "title": event_type, "summary": described.summary,
            "description": (model.__doc__ or "").strip(), "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{key}"},
            "bindings": {"amqp": {"messageType": event_type, "bindingVersion": AMQP_BINDING}},
        }
        channels[key] = {
            "address": event_type, "title": event_type, "description": described.summary,
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
            "bindings": {"amqp": {"is": "routingKey", "exchange": {
                "name": EVENTS_EXCHANGE, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                "bindingVersion": AMQP_BINDING}},
        }
        operations[f"receive_{key}"] = {
            "action": "receive", "channel": {"$ref": f"#/channels/{key}"}, "summary": described.summary,
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        }
    return {
        "asyncapi": ASYNCAPI,
        "info": {"title": "Coffer events", "version": version, "description": (
            "Every event Coffer publishes. Each is `{id, type, tenant_id, occurred_at, request_id, data}`; `data` "
            "never holds a secret value, a key or a credential. Read them from RabbitMQ with a provisioned "
            "consumer (`python -m services.provision --consumer NAME --events 'secret.*'`: a queue of your own "
            "on the topic exchange `coffer.events`, routing key = the type), or over HTTP as server-sent events "
            "(`GET /v1/events`, scope `events`: your tenant's events whose resources you may list).")},
        "defaultContentType": "application/json",
        "servers": {
            "broker": {"host": "rabbitmq:5672", "protocol": "amqp", "protocolVersion": "0-9-1",
                       "description": "the installation's RabbitMQ (the URL `services.provision --consumer` prints)"},
            "gateway": {"host": "coffer:8700", "protocol": "http", "pathname": "/v1/events",
                        "description": "the event stream: `text/event-stream`, `event:` the type, `data:` the event"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
