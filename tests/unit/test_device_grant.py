"""The device authorization grant of ``oidc`` methods (RFC 8628, api.md §10) without a provider: what of a
provider's answers Coffer takes, how each answer of its token endpoint maps to a refusal reason (including
those tests/oidc's provider never gives: ``slow_down``, a 429, a 5xx, an unknown error), the handle-keyed
encryption of the provider's device code, the ``nonce`` rule, and how ``coffer login --device`` polls.
The round trip against a real provider is tests/e2e/test_auth_oidc_device.py.
"""

from __future__ import annotations

from typing import Any

import click
import pytest
from coffer_client import _cli_oidc
from coffer_client.errors import AuthenticationRequired as ClientAuthenticationRequired
from coffer_client.errors import CofferError
from cryptography.exceptions import InvalidTag

from services.gateway.methods import device
from services.gateway.methods.models import OidcConfig
from shared.errors import AuthenticationRequired, InvalidConfig, ServiceUnavailable
from shared.outbound import OutboundPolicy

GOOD = {"device_code": "provider-code", "user_code": "WDJB-MJHT", "verification_uri": "https://op.example/device",
        "verification_uri_complete": "https://op.example/device?user_code=WDJB-MJHT", "expires_in": 600,
        "interval": 5}
CONFIG = OidcConfig(issuer="https://op.example", client_id="coffer", client_secret="s")


def test_a_good_answer_is_taken_and_bounded() -> None:
    grant = device._grant(GOOD)
    assert grant is not None and (grant.device_code, grant.user_code, grant.interval) == ("provider-code",
                                                                                          "WDJB-MJHT", 5)
    assert "provider-code" not in repr(grant) and "WDJB" not in repr(grant)
    long = device._grant({**GOOD, "expires_in": 86400, "interval": 600})
    assert long is not None and long.expires_in == device.MAX_TTL and long.interval == 60
    short = device._grant({**GOOD, "interval": 0})
    assert short is not None and short.interval == 1
    older = {k: v for k, v in GOOD.items() if k not in ("verification_uri", "interval")}
    grant = device._grant({**older, "verification_url": "https://op.example/device"})  # an older draft's name
    assert grant is not None and grant.verification_uri == "https://op.example/device" and grant.interval == 5


@pytest.mark.parametrize("change", [
    {"device_code": None}, {"device_code": ""}, {"device_code": "x" * 5000}, {"device_code": 7},
    {"user_code": "\x1b[31mX"}, {"user_code": "A\nB"}, {"user_code": ""}, {"user_code": "x" * 65},
    {"verification_uri": None}, {"verification_uri": "javascript:alert(1)"}, {"verification_uri": "/device"},
    {"verification_uri": "https://op.example/\x1b[2J"}, {"verification_uri": "https://u:p@op.example/"},
    {"verification_uri_complete": "ftp://op.example/"}, {"expires_in": 0}, {"expires_in": "600"},
    {"expires_in": True}, {"interval": "5"}, {"interval": 1.5},
])
def test_an_unusable_answer_is_refused(change: dict[str, Any]) -> None:
    assert device._grant({**GOOD, **change}) is None
    assert device._grant([GOOD]) is None


def fake_post(status: int, answer: Any) -> Any:
    async def post(*args: Any, **kwargs: Any) -> tuple[int, Any]:
        return status, answer
    return post


async def test_the_provider_refusing_to_start_or_answering_nonsense_is_invalid_config(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for status, answer, reason in ((400, {"error": "unauthorized_client"}, "unauthorized_client"),
                                   (401, {"error": "Not <a> code"}, "refused"), (400, None, "refused"),
                                   (200, {"device_code": "x"}, "unusable device authorization answer")):
        monkeypatch.setattr(device, "provider_post", fake_post(status, answer))
        with pytest.raises(InvalidConfig) as refused:
            await device.authorize_device(OutboundPolicy(), {}, "https://op.example/device", CONFIG, "s", "n")
        assert refused.value.details["reason"] == reason
    monkeypatch.setattr(device, "provider_post", fake_post(502, None))
    with pytest.raises(ServiceUnavailable):
        await device.authorize_device(OutboundPolicy(), {}, "https://op.example/device", CONFIG, "s", "n")


@pytest.mark.parametrize(("status", "answer", "reason"), [
    (400, {"error": "authorization_pending"}, "authorization_pending"), (400, {"error": "slow_down"}, "slow_down"),
    (429, None, "slow_down"), (400, {"error": "access_denied"}, "access_denied"),
    (400, {"error": "expired_token"}, "expired_token"), (400, {"error": "invalid_grant"}, "device_code"),
    (401, {"error": "invalid_client"}, "device_code"), (400, "not json", "device_code"),
    (200, {"access_token": "a"}, "device_code"),
])
async def test_each_token_endpoint_answer_is_its_reason(monkeypatch: pytest.MonkeyPatch, status: int, answer: Any,
                                                        reason: str) -> None:
    monkeypatch.setattr(device, "provider_post", fake_post(status, answer))
    with pytest.raises(AuthenticationRequired) as refused:
        await device.redeem_device(OutboundPolicy(), {}, "https://op.example/token", CONFIG, "s", "code")
    assert refused.value.details["reason"] == reason
    assert device.keeps_polling(refused.value) == (reason in ("authorization_pending", "slow_down"))


async def test_an_id_token_is_answered_and_a_provider_in_trouble_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "provider_post", fake_post(200, {"id_token": "a.b.c", "access_token": "x"}))
    assert await device.redeem_device(OutboundPolicy(), {}, "https://op.example/token", CONFIG, "s", "c") == "a.b.c"
    monkeypatch.setattr(device, "provider_post", fake_post(503, None))
    with pytest.raises(ServiceUnavailable):
        await device.redeem_device(OutboundPolicy(), {}, "https://op.example/token", CONFIG, "s", "c")


def test_the_providers_code_opens_only_with_its_handle_tenant_and_method() -> None:
    handle = device.new_handle()
    sealed = device.seal_code(handle, "ten_1", "sso", "provider-code")
    assert b"provider-code" not in sealed and device.handle_hash(handle) not in sealed
    assert device.open_code(handle, "ten_1", "sso", sealed) == "provider-code"
    for args in ((device.new_handle(), "ten_1", "sso"), (handle, "ten_2", "sso"), (handle, "ten_1", "other")):
        with pytest.raises(InvalidTag):
            device.open_code(*args, sealed)


def test_a_nonce_is_checked_when_the_provider_echoes_one() -> None:
    device.check_device_nonce({}, "n-1")
    device.check_device_nonce({"nonce": "n-1"}, "n-1")
    for other in ("n-2", 5, ["n-1"]):
        with pytest.raises(AuthenticationRequired) as refused:
            device.check_device_nonce({"nonce": other}, "n-1")
        assert refused.value.details["reason"] == "nonce"


# -- coffer login --oidc … --device ----------------------------------------------------------------

class Polled:
    """A client whose polls answer ``answers`` in turn (an exception is raised, anything else is a token)."""

    def __init__(self, *answers: Any) -> None:
        self.answers, self.polls = list(answers), 0

    def start_device_login(self, method: str, role: str) -> dict[str, Any]:
        return {"device_code": "h" * 43, "user_code": "WDJB\x1b[2J-MJHT", "verification_uri": GOOD["verification_uri"],
                "expires_in": 600, "interval": 2}

    def login_device(self, method: str, device_code: str) -> None:
        self.polls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer


def told(reason: str, **details: Any) -> ClientAuthenticationRequired:
    return ClientAuthenticationRequired("no", status=401, details={"reason": reason, **details})


def run(client: Polled, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[list[float], str]:
    waits: list[float] = []
    monkeypatch.setattr(_cli_oidc.time, "sleep", waits.append)
    try:
        _cli_oidc.device_login(client, "sso", "people", open_browser=False)  # type: ignore[arg-type]
    finally:
        shown = capsys.readouterr().err
    return waits, shown


def test_the_cli_polls_at_the_interval_and_backs_off_on_slow_down(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    client = Polled(told("authorization_pending", interval=2), told("slow_down", interval=7), told("slow_down"),
                    None)
    waits, shown = run(client, monkeypatch, capsys)
    assert client.polls == 4 and [round(w) for w in waits] == [2, 2, 7, 12]
    assert "open https://op.example/device" in shown and "WDJB[2J-MJHT" in shown and "\x1b" not in shown
    assert "h" * 43 not in shown  # the handle is never shown


@pytest.mark.parametrize(("answer", "says"), [(told("access_denied"), "refused at the provider"),
                                              (told("expired_token"), "expired")])
def test_the_cli_stops_on_a_refusal_or_an_expired_code(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], answer: Exception,
                                                       says: str) -> None:
    with pytest.raises(click.ClickException, match=says):
        run(Polled(told("authorization_pending"), answer), monkeypatch, capsys)


def test_the_cli_passes_any_other_error_on(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CofferError) as raised:
        run(Polled(told("audience")), monkeypatch, capsys)
    assert raised.value.details["reason"] == "audience"
