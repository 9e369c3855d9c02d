"""What Coffer shows of an upstream it called (issue #27, findings 5 and 6): a webhook attempt's kept answer,
one text for every failed connection, and what counts as a public upstream (``shared.reach``)."""

from __future__ import annotations

import asyncio
import errno

import aiohttp
import pytest

from services.webhooks import domain
from shared.reach import COULD_NOT_CONNECT, Reach, cause, is_public, read_at_most, recording, watching

# -- webhook attempts: what is kept of the answer ------------------------------------------------------


def test_a_public_receivers_body_is_kept_up_to_1_kib_a_private_ones_not_at_all() -> None:
    big = b"x" * (64 * 1024)
    assert domain.body_budget(True) == 1024 and domain.body_budget(False) == 0
    assert domain.kept_body(big, True) == "x" * 1024
    assert domain.kept_body(big, False) is None
    assert domain.kept_body(b"ok", True) == "ok"
    assert domain.kept_body("é".encode() * 600, True) is not None  # cut inside a character: still text


def test_stored_bodies_are_shown_at_most_1_kib() -> None:
    assert domain.shown_body(None) is None and domain.shown_body("fine") == "fine"
    assert domain.shown_body("y" * 65536) == "y" * 1024
    assert len(domain.shown_body("é" * 4000).encode()) <= 1024  # type: ignore[union-attr]


def test_only_a_bounded_set_of_headers_is_kept() -> None:
    kept = domain.kept_headers({"content-type": "text/plain", "set-cookie": "s=1", "server": "nginx/1.2",
                                "retry-after": "9" * 1000, "x-internal": "v"})
    assert kept == {"content-type": "text/plain", "retry-after": "9" * 200}
    assert domain.kept_headers({"content-type": "a\x00b\r\nc"}) == {"content-type": "abc"}
    assert domain.kept_headers({}) == {}


def test_no_answer_reads_the_same_whatever_the_cause_unless_the_receiver_is_public() -> None:
    private = {domain.no_answer(timed_out, False) for timed_out in (True, False)}
    assert private == {("webhook_delivery_failed", COULD_NOT_CONNECT)}
    assert domain.no_answer(False, True) == ("webhook_delivery_failed", COULD_NOT_CONNECT)
    assert domain.no_answer(True, True) == ("webhook_delivery_timeout", None)  # the documented code, public only


class _Stream:
    """A body of ``size`` bytes arriving in chunks; counts what was taken off it."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.taken = 0

    async def read(self, n: int = -1) -> bytes:
        chunk = min(n, self.left, 300)
        self.left -= chunk
        self.taken += chunk
        return b"z" * chunk


async def test_no_more_of_the_body_than_is_kept_is_read_off_the_socket() -> None:
    stream = _Stream(64 * 1024)
    assert await read_at_most(stream, 1024) == b"z" * 1024
    assert stream.taken == 1024
    stream = _Stream(64 * 1024)
    assert await read_at_most(stream, 0) == b"" and stream.taken == 0
    stream = _Stream(10)
    assert await read_at_most(stream, 1024) == b"z" * 10


# -- what is public ---------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "1.1.1.1"])
def test_public_addresses(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.5", "192.168.1.1", "172.16.0.1", "169.254.169.254",
                                     "100.64.0.1", "::1", "fd00::1", "fe80::1", "::ffff:127.0.0.1",
                                     "::ffff:10.0.0.1", "64:ff9b::a00:1", "0.0.0.0", "not an address", ""])
def test_private_or_odd_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


async def test_a_reach_is_public_only_while_every_address_seen_was() -> None:
    assert not Reach().public  # nothing seen: not public
    assert Reach("8.8.8.8").public and not Reach("127.0.0.1").public and not Reach("[::1]").public
    answers = iter([["8.8.8.8"], ["10.0.0.1"], ["8.8.8.8"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    reach = Reach("evil.example")
    lookup = reach.lookup(rebinding)
    await lookup("evil.example", 443)
    assert reach.public
    await lookup("evil.example", 443)  # rebinding to a private address: private from now on
    await lookup("evil.example", 443)
    assert not reach.public


async def test_watching_notes_what_the_recording_lookup_answers_in_this_call_only() -> None:
    async def lookup(host: str, port: int) -> list[str]:
        return {"pub.example": ["8.8.8.8"], "priv.example": ["8.8.8.8", "10.1.2.3"]}[host]

    noted = recording(lookup)
    with watching("pub.example") as pub:
        await noted("pub.example", 443)
    with watching("priv.example") as priv:
        await asyncio.create_task(noted("priv.example", 443))  # a task started inside counts too
    await noted("pub.example", 443)  # outside any watch: nothing to note, no error
    assert pub.public and not priv.public


def test_the_cause_names_types_and_errno_never_the_message() -> None:
    inner = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('10.0.0.7', 5432) password=hunter2")
    outer = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None), inner)
    text = cause(outer)
    assert "ClientConnectorError" in text and f"errno {errno.ECONNREFUSED}" in text
    assert "hunter2" not in text and "10.0.0.7" not in text
    try:
        try:
            raise EOFError("server said: secret")
        except EOFError as exc:
            raise RuntimeError("wrapped https://u:p@host/?token=t") from exc
    except RuntimeError as exc:
        text = cause(exc)
    assert text == "RuntimeError <- EOFError"


# -- federation backends: the status only for a public backend ---------------------------------------


def test_a_public_backend_is_shown_its_status_a_private_one_could_not_connect() -> None:
    from services.secrets.backends import answered, shown, unreachable
    from shared.errors import BackendError, BackendTimeout

    public, private = Reach("8.8.8.8"), Reach("10.0.0.9")
    err = answered("b", public, "backend 'b' answered 405", 405, "method_not_allowed")
    assert err.message == "backend 'b' answered 405"
    assert err.details == {"backend": "b", "status": 405, "upstream": "method_not_allowed"}
    err = answered("b", private, "backend 'b' answered 405", 405, "method_not_allowed")
    assert (err.code, err.message, err.details) == ("backend_error", "could not connect to backend 'b'",
                                                    {"backend": "b"})
    assert isinstance(unreachable("b", TimeoutError(), public, timeout=2.0), BackendTimeout)
    texts = {(type(e), e.message, str(e.details)) for e in (
        unreachable("b", TimeoutError(), private, timeout=2.0), unreachable("b", ConnectionRefusedError(), private),
        unreachable("b", EOFError(), private), unreachable("b", ConnectionRefusedError(), public))}
    assert texts == {(BackendError, "could not connect to backend 'b'", str({"backend": "b"}))}
    assert shown("b", public, 429, "rate_limited") == {"backend": "b", "status": 429, "upstream": "rate_limited"}
    assert shown("b", private, 429, "rate_limited") == {"backend": "b"}


# -- ACME CAs: what was wrong only for a public CA -------------------------------------------------------


def test_a_public_ca_is_shown_what_went_wrong_a_private_one_could_not_connect() -> None:
    from services.pki.acme.protocol import CA_UNREACHABLE, AcmeUnavailable, Answer, unavailable
    from services.pki.acme.service import upstream_error
    from shared.errors import BackendError, BackendTimeout

    public = unavailable(True, "the CA failed (HTTP 503)")
    assert public.reason == "the CA failed (HTTP 503)" and not public.timeout
    assert isinstance(upstream_error(unavailable(True, "late", timeout=True)), BackendTimeout)
    for reason, timeout in (("the CA failed (HTTP 405)", False), ("the CA did not answer in time", True),
                            ("the CA could not be reached (ClientOSError)", False)):
        private = unavailable(False, reason, timeout=timeout)
        assert (private.reason, private.timeout) == (CA_UNREACHABLE, False)
        err = upstream_error(private)
        assert isinstance(err, BackendError) and err.message == "could not connect to the ACME CA"
    with pytest.raises(AcmeUnavailable) as shown:
        Answer(200, {}, b"<html>", public=True).json()
    assert "not JSON" in shown.value.reason
    with pytest.raises(AcmeUnavailable) as hidden:
        Answer(200, {}, b"<html>", public=False).json()
    assert hidden.value.reason == CA_UNREACHABLE
