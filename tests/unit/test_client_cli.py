"""The client and CLI parts that need no platform: the request line a path becomes (read off a socket),
transport failures in words, age key files, error details and table widths (issue #28 item 4)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
from coffer_client import AsyncClient, Client, errors
from coffer_client._age import RecipientError, bech32_decode, public_key, recipient_from, recipients_in
from coffer_client._cli_common import error_lines, fit_widths

ANSWER = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 58\r\n"
          b"Connection: close\r\n\r\n" + b'{"error": {"code": "secret_not_found", "message": "gone"}}')


@pytest.fixture
def wire() -> Iterator[tuple[str, list[bytes]]]:
    """A server that answers 404 to everything and keeps each request line as it came."""
    server = socket.create_server(("127.0.0.1", 0))
    lines: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                lines.append(data.split(b"\r\n", 1)[0])
                conn.sendall(ANSWER)

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", lines
    server.close()


TYPED = [
    ("a/../b", b"GET /v1/secrets/a/../b HTTP/1.1"),
    ("a/x/../y", b"GET /v1/secrets/a/x/../y HTTP/1.1"),
    ("./a", b"GET /v1/secrets/./a HTTP/1.1"),
    ("a/.", b"GET /v1/secrets/a/. HTTP/1.1"),
    ("/a/b/", b"GET /v1/secrets//a/b/ HTTP/1.1"),
    ("a/%2E%2E/b", b"GET /v1/secrets/a/%252E%252E/b HTTP/1.1"),  # a typed "%" is a character, not an escape
    ("bad path!", b"GET /v1/secrets/bad%20path%21 HTTP/1.1"),
    ("app/db", b"GET /v1/secrets/app/db HTTP/1.1"),
]


def test_a_secret_path_is_sent_as_typed(wire: tuple[str, list[bytes]]) -> None:
    addr, lines = wire
    with Client(addr, "t", retries=0) as client:
        for path, _ in TYPED:
            with pytest.raises(errors.SecretNotFound):
                client.get_secret(path)
        with pytest.raises(errors.SecretNotFound):
            client.put_secret("a/../b", "v")
        with pytest.raises(errors.SecretNotFound):
            client.get_secret("a/../b", version=3)
        with pytest.raises(errors.SecretNotFound):
            next(iter(client.versions("a/x/../y")))
        with pytest.raises(errors.SecretNotFound):
            client.request("GET", "/v1/secrets/a/%2E%2E/b")
    assert lines == [line for _, line in TYPED] + [
        b"PUT /v1/secrets/a/../b HTTP/1.1", b"GET /v1/secrets/a/../b?version=3 HTTP/1.1",
        b"GET /v1/secrets/a/x/../y:versions?limit=100 HTTP/1.1", b"GET /v1/secrets/a/%2E%2E/b HTTP/1.1"]


async def test_the_async_client_and_an_address_with_a_path_send_it_as_typed(wire: tuple[str, list[bytes]]) -> None:
    addr, lines = wire
    async with AsyncClient(addr + "/coffer/", "t", retries=0) as client:
        with pytest.raises(errors.SecretNotFound):
            await client.delete_secret("a/../b")
        with pytest.raises(errors.SecretNotFound):
            await client.get_secret("app/db")
    assert lines == [b"DELETE /coffer/v1/secrets/a/../b HTTP/1.1", b"GET /coffer/v1/secrets/app/db HTTP/1.1"]


def test_no_answer_is_told_in_words() -> None:
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    with Client(f"http://127.0.0.1:{port}", "t") as client, pytest.raises(errors.CofferError) as refused:
        client.whoami()
    assert str(refused.value).startswith(f"error: cannot reach http://127.0.0.1:{port}: connection refused")
    assert refused.value.status == 0 and "ConnectError" not in str(refused.value)
    with Client("http://no-such-host.invalid", "t") as client, pytest.raises(errors.CofferError) as unresolved:
        client.whoami()
    assert "cannot reach http://no-such-host.invalid: name not resolved" in str(unresolved.value)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        addr = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with Client(addr, "t", timeout=0.3) as client, pytest.raises(errors.CofferError) as slow:
            client.whoami()
    assert f"cannot reach {addr}: timed out waiting for an answer (after 0.3 s)" in str(slow.value)
    with Client("ftp://example.com", "t") as client, pytest.raises(errors.CofferError) as scheme:
        client.whoami()
    assert "must start with http:// or https://" in str(scheme.value)


def test_unreachable_from_async_code_too() -> None:
    async def call() -> None:
        async with AsyncClient("http://no-such-host.invalid", "t") as client:
            await client.whoami()

    with pytest.raises(errors.CofferError, match="name not resolved"):
        asyncio.run(call())


# -- age --------------------------------------------------------------------------------------------------

def test_an_identitys_public_key_is_ages() -> None:
    for _ in range(5):
        identity = pyrage.x25519.Identity.generate()
        assert public_key(str(identity)) == str(identity.to_public())
        assert public_key(str(identity).lower()) == str(identity.to_public())
    with pytest.raises(RecipientError):
        public_key("AGE-SECRET-KEY-1QQQQ")
    assert bech32_decode("age1nope") is None


def test_the_file_age_keygen_writes_is_a_recipient(tmp_path: Path) -> None:
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    stated = next(line.split(": ")[1] for line in key.read_text().splitlines() if line.startswith("# public key"))
    assert recipient_from(str(key)) == stated


def test_recipient_files_and_what_they_may_not_hold(tmp_path: Path) -> None:
    one, two = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    r1, r2, secret = str(one.to_public()), str(two.to_public()), str(one)
    ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGjZ4Hg5lX6jNJ7bC5c3n8hp3eE0rW0zJ0m0a9bqC1nP me@laptop"
    assert recipients_in(f"# team\n\n{r1}\n  {r2}  \n{r1}\n", "f") == [r1, r2]
    assert recipients_in(f"# created: now\n# public key: {r1}\n{secret}\n", "f") == [r1]
    assert recipients_in(ssh + "\n", "f") == [ssh]
    assert recipient_from("age1literal-checked-by-the-server") == "age1literal-checked-by-the-server"
    cases = {
        f"# public key: {r2}\n{secret}\n": "is not the public key",
        f"{secret[:-4]}qqqq\n": "line 1 of",
        f"{r1}\nhello {secret}\n": "line 2 of",
        f"{r1}\n{r2}\n": "names 2 recipients",
        "# nothing\n": "holds no recipient",
    }
    for text, says in cases.items():
        path = tmp_path / "r.txt"
        path.write_text(text)
        with pytest.raises(RecipientError) as caught:
            recipient_from(str(path))
        assert says in str(caught.value) and secret[16:] not in str(caught.value), text
    with pytest.raises(RecipientError, match="command line") as caught:
        recipient_from(secret)
    assert secret[16:] not in str(caught.value)
    # a path that isn't there is said so, not sent to the server as if it were a recipient
    with pytest.raises(RecipientError, match="no such file"):
        recipient_from(str(tmp_path / "missing.pub"))


# -- errors and tables ---------------------------------------------------------------------------------------

def test_an_error_is_one_line_then_its_details_in_words() -> None:
    fields = errors.from_response(422, {"error": {"code": "validation_error", "message": "request validation failed",
                                                  "request_id": "req_1", "details": {"fields": [
                                                      {"field": "ttl", "message": "must be a duration"}]}}})
    assert error_lines(fields) == ["error: validation_error: request validation failed (request req_1)",
                                   "  ttl: must be a duration"]
    rule = errors.from_response(422, {"error": {"code": "validation_error", "message": "m", "details": {
        "policy": "prod", "rule": "max_ttl", "allowed_types": ["password", "api_key"], "empty": None}}})
    assert error_lines(rule)[1:] == ["  policy: prod", "  rule: max_ttl", "  allowed types: password, api_key"]
    long = errors.from_response(400, {"error": {"code": "invalid_path", "message": "m",
                                                "details": {"path": "a" * 600}}})
    assert len(error_lines(long)[1]) < 220
    expired = errors.from_response(401, {"error": {"code": "token_expired", "message": "m"}})
    assert error_lines(expired, "file")[-1] == "  run `coffer login` for a new token"
    assert "COFFER_TOKEN" in error_lines(expired, "env")[-1]
    down = errors.CofferError("cannot reach http://x: connection refused", status=0)
    assert error_lines(down) == ["error: unreachable: cannot reach http://x: connection refused"]


def test_the_kept_column_is_the_last_to_shrink() -> None:
    natural, floors = [40, 7, 17, 19, 19], [12, 7, 17, 10, 10]
    assert fit_widths(natural, floors, 200, 0) == natural
    wrapped = fit_widths(natural, floors, 100, 0)
    assert sum(wrapped) == 100 and wrapped[0] == 40  # the others gave way, wrapping between words
    folded = fit_widths(natural, floors, 52, 0)
    assert sum(folded) == 52 and folded[0] == 40 and folded[1:] == [3, 3, 3, 3]  # down to 3 before the path moves
    squeezed = fit_widths(natural, floors, 30, 0)
    assert squeezed == [18, 3, 3, 3, 3]
    assert fit_widths(natural, floors, 5, 0)[0] == 12  # never under its floor
    assert fit_widths([5, 30], [5, 12], 20, 1) == [3, 17]  # any column may be the kept one
