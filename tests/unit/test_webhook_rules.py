"""Webhook rules: signatures, backoff, matching (the URL guard is tests/unit/test_outbound.py)."""

from __future__ import annotations

import random
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.webhooks import domain
from shared.contracts.events import Event, resource_of


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


@pytest.mark.parametrize(("event_type", "data", "resource"), [
    ("secret.updated", {"path": "app/db"}, "secrets/app/db"),
    ("policy.created", {"id": "pol_1", "name": "ops"}, "policies/ops"),
    ("tenant.deleted", {"tenant_id": "ten_1"}, "tenants/ten_1"),
    ("webhook.disabled", {"webhook_id": "whk_1"}, "webhooks/whk_1"),
    ("token.revoked", {"identity_id": "idn_1", "generation": 2}, "identities/idn_1"),
    ("token.revoked", {"jti": "tok_1"}, "sys/tokens"),
    ("secret.updated", {}, "events/secret.updated"),  # no path: only a policy reaching events/** lets it by
    ("certificate.issued", {"serial": "ab"}, "events/certificate.issued"),
])
def test_the_resource_an_event_is_about(event_type: str, data: dict[str, str], resource: str) -> None:
    assert resource_of(Event(type=event_type, data=data)) == resource
