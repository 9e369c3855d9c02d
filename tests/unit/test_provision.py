"""The broker permissions ``services.provision`` grants, read as RabbitMQ reads them (issue #27).

RabbitMQ matches a permission's regex anywhere in the name or routing key (an unanchored search): so does
``re.search`` here. The broker itself is exercised in tests/integration/test_bus_auth.py; this checks every
service against every other, which the integration tests do only for a few pairs.
"""

from __future__ import annotations

import importlib
import re

import pytest

from services.provision import CALLS, LEGACY_RPC_EXCHANGE, rabbit_permissions, topic_permissions
from shared.bus.base import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, RPC_EXCHANGE
from shared.bus.rabbit.batch import BATCH_METHOD
from shared.registry import SERVICES, rpc_name

EXCHANGES = (RPC_EXCHANGE, EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE, LEGACY_RPC_EXCHANGE, "amq.default", "amq.topic",
             "amq.direct", "amq.fanout", "amq.headers", "amq.match", "amq.rabbitmq.trace")


def may(regex: str, name: str) -> bool:
    return re.search(regex, name) is not None


def queues(service: str) -> list[str]:
    """Queue names ``service``'s bus makes (RPC, event consumers, their dead letters, broadcasts)."""
    return [f"coffer.rpc.{rpc_name(service)}", f"coffer.events.{service}", f"coffer.events.{service}-tenants",
            f"coffer.dead.{service}", f"coffer.dead.{service}-tenants", f"coffer.bcast.{service}-authz.0a1b2c3d"]


def consumers(service: str) -> list[str]:
    return [service, f"{service}-tenants", f"{service}-authz"]


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_may_make_only_its_own_queues_and_no_exchange(service: str) -> None:
    configure = rabbit_permissions(service)["configure"]
    for other in SERVICES:
        assert all(may(configure, q) == (other == service) for q in queues(other)), other
    assert not any(may(configure, x) for x in EXCHANGES)  # no queue name it may make is an exchange's


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_binds_only_its_own_traffic(service: str) -> None:
    """Read on an exchange lets a queue be bound to it; the topic permissions say with which keys."""
    read, topics = rabbit_permissions(service)["read"], topic_permissions(service)
    assert {x for x in EXCHANGES if may(read, x)} == {RPC_EXCHANGE, EVENTS_EXCHANGE, DEAD_LETTER_EXCHANGE}
    requests, dead = topics[RPC_EXCHANGE]["read"], topics[DEAD_LETTER_EXCHANGE]["read"]
    for other in SERVICES:
        own = other == service
        for method in ("put", "get", "token", "may", "engine_create", "backend_create", BATCH_METHOD):
            assert may(requests, f"{rpc_name(other)}.{method}") == own, (other, method)
        assert all(may(dead, c) == own for c in consumers(other)), other
    for wildcard in ("#", "*", "*.put", "#.put", "*.*"):
        assert not may(requests, wildcard) and not may(dead, wildcard), wildcard
    assert not may(requests, rpc_name(service)) and not may(dead, f"{service}.#")


def test_each_caller_publishes_only_the_calls_its_callees_accept() -> None:
    """``CALLS`` (the broker's side) and the services' ``rpc_callers`` (their own check) say the same."""
    accepted: dict[str, dict[str, tuple[str, ...]]] = {}  # rpc name -> method -> callers beyond the gateway
    for service in SERVICES:
        spec = importlib.import_module(f"services.{service}.app").SPEC
        accepted[rpc_name(service)] = {m: tuple(c for c in callers if c != "gateway")
                                       for m, callers in spec.rpc_callers.items()}
    for service in SERVICES:
        write = rabbit_permissions(service)["write"]
        calls = topic_permissions(service)[RPC_EXCHANGE]["write"]
        assert may(write, RPC_EXCHANGE) == (service in CALLS)
        for rpc, methods in accepted.items():
            for method in ("put", "token", "engine_create", *methods):
                allowed = service == "gateway" or service in methods.get(method, ())
                assert may(calls, f"{rpc}.{method}") == allowed, (service, rpc, method)
            batches = service == "gateway" or any(service in callers for callers in methods.values())
            assert may(calls, f"{rpc}.{BATCH_METHOD}") == batches, (service, rpc)
        assert not may(calls, "#") and not may(calls, "secrets.put.x")


@pytest.mark.parametrize("service", SERVICES)
def test_nobody_publishes_dead_letters(service: str) -> None:
    """RabbitMQ dead-letters without the topic check; a service itself may put nothing into any dead letters."""
    dead = topic_permissions(service)[DEAD_LETTER_EXCHANGE]["write"]
    assert not any(may(dead, c) for other in SERVICES for c in consumers(other))
