"""Prometheus metrics of a Coffer process (one registry, exposed by the gateway at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter("coffer_http_requests", "HTTP requests by route template, method and outcome code",
                        ["method", "route", "code"], registry=REGISTRY)
HTTP_LATENCY = Histogram("coffer_http_request_duration_seconds", "HTTP request latency by route template",
                         ["method", "route"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
RPC_LATENCY = Histogram("coffer_rpc_duration_seconds", "RPC round trip over the bus, by service, method, outcome",
                        ["service", "method", "outcome"], buckets=_LATENCY_BUCKETS, registry=REGISTRY)
RPC_BATCH_ITEMS = Histogram("coffer_rpc_batch_items", "Calls per RPC message sent, by called service (RabbitMQ bus)",
                            ["service"], buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=REGISTRY)
OUTBOX_BACKLOG = Gauge("coffer_outbox_backlog", "Outbox rows not yet confirmed by the broker, per service",
                       ["service"], registry=REGISTRY)
BUS_RECONNECTS = Counter("coffer_bus_reconnects", "Times this process's RabbitMQ connection was re-established",
                         ["bus"], registry=REGISTRY)
#: 1 while the service answers the gateway's ping (its storage too), 0 when it doesn't (down, sealed, cut off)
SERVICE_UP = Gauge("coffer_service_up", "Whether the service answers the gateway's ping (read at each scrape)",
                   ["service"], registry=REGISTRY)
#: what services count for the alert rules (deploy/prometheus), read at each scrape through their ping
SERVICE_GAUGES = {name: Gauge(name, doc, ["service"], registry=REGISTRY) for name, doc in (
    ("coffer_webhook_deliveries_failed", "Webhook deliveries that gave up (every attempt failed) in the last hour"),
    ("coffer_webhook_deliveries_pending", "Webhook deliveries waiting for their next attempt"),
    ("coffer_certificates_expiring", "Issued certificates, not revoked, whose not_after is within 7 days"),
    ("coffer_lease_revocations_retrying", "Leases whose revocation at the target failed and is being retried"),
)}
SECRET_ROTATIONS = Counter("coffer_secret_rotations", "Secret rotations by trigger (request, schedule) and outcome",
                           ["trigger", "outcome"], registry=REGISTRY)


def render() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(REGISTRY)
