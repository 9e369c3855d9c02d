"""Webhook rules: the SSRF guard with a test resolver, signatures, backoff."""

from __future__ import annotations

import ipaddress
import random
import socket
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.webhooks import domain, ssrf
from services.webhooks.domain import AddressPolicy
from shared.errors import CofferError

ZONE = {"public.example": ["93.184.216.34"], "evil.example": ["10.0.0.5"],
        "mixed.example": ["93.184.216.34", "127.0.0.1"], "v6.example": ["2606:2800:220:1::1"],
        "meta.example": ["169.254.169.254"]}


async def lookup(host: str, port: int) -> list[str]:
    if host not in ZONE:
        raise socket.gaierror("no such host")
    return ZONE[host]


@pytest.mark.parametrize(("url", "ok"), [
    ("https://public.example/hook", True), ("https://v6.example/hook", True),
    ("https://evil.example/hook", False), ("https://mixed.example/hook", False),
    ("https://meta.example/latest/meta-data", False), ("https://unknown.example/", False),
    ("http://public.example/hook", False), ("https://public.example/hook#frag", False),
])
async def test_every_resolved_address_must_be_public(url: str, ok: bool) -> None:
    if ok:
        assert await ssrf.check(url, AddressPolicy(), lookup)
    else:
        with pytest.raises(CofferError) as err:
            await ssrf.check(url, AddressPolicy(), lookup)
        assert err.value.code == "webhook_url_invalid"


async def test_operator_allow_list_and_http() -> None:
    policy = AddressPolicy(allowed=(ipaddress.ip_network("10.0.0.0/8"),), allow_http=True)
    assert await ssrf.check("http://evil.example/hook", policy, lookup) == ["10.0.0.5"]


async def test_the_connect_time_resolver_refuses_a_rebound_name() -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # public when checked, loopback at connect

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    assert await ssrf.check("https://rebind.example/", AddressPolicy(), rebinding)
    resolver = ssrf.GuardedResolver(AddressPolicy(), rebinding)
    with pytest.raises(OSError):
        await resolver.resolve("rebind.example", 443)


async def test_the_resolver_hands_over_only_checked_addresses() -> None:
    resolved = await ssrf.GuardedResolver(AddressPolicy(), lookup).resolve("public.example", 443)
    assert [r["host"] for r in resolved] == ["93.184.216.34"] and resolved[0]["hostname"] == "public.example"


def test_signatures_verify_with_the_reference_library() -> None:
    secret = domain.new_secret()
    old = domain.new_secret()
    body = b'{"type":"secret.created","data":{"path":"a"}}'
    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": domain.signature_header([secret, old], "msg_1", ts, body)}
    assert Webhook(secret).verify(body, headers)["type"] == "secret.created"
    assert Webhook(old).verify(body, headers)["data"] == {"path": "a"}
    assert 24 <= len(domain.secret_key(secret)) <= 64
    with pytest.raises(WebhookVerificationError):
        Webhook(domain.new_secret()).verify(body, headers)


def test_backoff_schedule_jitter_and_retry_after() -> None:
    rng = random.Random(7)
    schedule = domain.DEFAULT_SCHEDULE
    assert domain.next_delay(schedule, 0, None, rng) == 0.0
    second = domain.next_delay(schedule, 1, None, rng)
    assert second is not None and 4.0 <= second <= 6.0
    assert domain.next_delay(schedule, 1, 120.0, rng) == 120.0  # Retry-After asks for longer
    assert domain.next_delay(schedule, len(schedule), None, rng) is None  # used up
    assert domain.parse_retry_after("30") == 30.0 and domain.parse_retry_after("soon") is None


def test_subscription_matching() -> None:
    event = {"type": "secret.updated", "data": {"path": "app/prod/db"}}
    assert domain.subscription_matches(["secret.*"], None, event)
    assert domain.subscription_matches(["#"], "app/**", event)
    assert not domain.subscription_matches(["secret.created"], None, event)
    assert not domain.subscription_matches(["secret.*"], "app/dev/**", event)
    assert not domain.subscription_matches(["secret.*"], "app/**", {"type": "secret.updated", "data": {}})
