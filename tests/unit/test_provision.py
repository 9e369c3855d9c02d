"""The broker permissions ``services.provision`` grants, read as RabbitMQ reads them (issue #27).

RabbitMQ matches a permission's regex anywhere in the name or routing key (an unanchored search): so does
``re.search`` here. The broker itself is exercised in tests/integration/test_bus_auth.py; this checks every
service against every other, which the integration tests do only for a few pairs.
"""

from __future__ import annotations

import importlib
import re

import pytest

from services.provision import (
    CALLS,
    LEGACY_RPC_EXCHANGE,
    MARK,
    TAKE_OVER_ENV,
    default_prefix,
    definitions,
    installation_id,
    installation_mark,
    pg_role,
    rabbit_permissions,
    rabbitmq_conflicts,
    refusal,
    topic_permissions,
    user_prefix,
)
from shared.bus.base import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, RPC_EXCHANGE
from shared.bus.rabbit.batch import BATCH_METHOD
from shared.config import Settings
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


# --- one installation's names and marks (issue #28, item 5) ---


def test_each_installation_has_a_prefix_of_its_own_that_every_run_finds_again() -> None:
    """Users and roles are global to the broker and the cluster: without COFFER_SCHEMA_PREFIX, the prefix is
    derived from the database and vhost, the same on every run, different for another database or vhost."""
    prefixes = {default_prefix(db, vhost) for db in ("coffer", "coffer2", "Coffer-Prod.eu", "äöü", "x" * 63)
                for vhost in ("/", "prod", "coffer")}
    assert len(prefixes) == 15
    for prefix in prefixes:
        assert re.fullmatch(Settings.model_fields["schema_prefix"].metadata[0].pattern, prefix), prefix
        assert len(pg_role(prefix, "webhooks")) <= 63 and prefix.endswith("_")
    assert default_prefix("coffer", "/") == default_prefix("coffer", "/") != default_prefix("coffer", "prod")
    assert default_prefix("coffer", "/").startswith("coffer_")


def test_an_explicit_prefix_is_kept_even_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COFFER_SCHEMA_PREFIX", raising=False)
    assert user_prefix(Settings(), "coffer", "/") == default_prefix("coffer", "/")
    assert user_prefix(Settings(schema_prefix="a_"), "coffer", "/") == "a_"
    monkeypatch.setenv("COFFER_SCHEMA_PREFIX", "")  # the names of earlier versions: coffer-gateway, coffer_gateway
    assert user_prefix(Settings(), "coffer", "/") == ""
    assert Settings().schema_for("secrets") == "secrets"  # schemas never get the derived prefix


def test_provisioned_users_carry_their_installations_mark() -> None:
    mark = installation_mark(installation_id("coffer", "/"))
    assert mark.startswith(MARK) and mark != installation_mark(installation_id("coffer", "prod"))
    users = definitions("/", {s: "pw" for s in SERVICES}, "p_", mark)["users"]
    assert {u["name"]: u["tags"] for u in users} == {f"coffer-p_{s}": [mark] for s in SERVICES}
    assert all(u["tags"] == [] for u in definitions("/", {s: "pw" for s in SERVICES}, "")["users"])  # compose's


def test_users_not_marked_as_this_installations_are_conflicts() -> None:
    ours, theirs = installation_id("a", "/"), installation_id("b", "/")
    existing = {"coffer-p_gateway": [installation_mark(ours)], "coffer-p_secrets": [installation_mark(theirs)],
                "coffer-p_pki": [], "coffer-p_lease": ["management"], "guest": ["administrator"]}
    found = rabbitmq_conflicts(existing, [f"coffer-p_{s}" for s in SERVICES], ours)
    assert [c.split(" (")[0] for c in found] == ["RabbitMQ user coffer-p_secrets", "RabbitMQ user coffer-p_pki",
                                                  "RabbitMQ user coffer-p_lease"]
    assert "another installation" in found[0] and "no installation's mark" in found[1]
    message = refusal(ours, found)
    assert "--take-over" in message and f"{TAKE_OVER_ENV}=1" in message and "COFFER_SCHEMA_PREFIX" in message
