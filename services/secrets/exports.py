"""Rules of exports, without I/O (api.md §5.3): recipients, key names, and the two bundle formats.

A bundle is built in memory and encrypted with ``pyrage`` (the Rust ``age``
implementation) for one recipient: an age X25519 key (``age1…``) or an
``ssh-ed25519`` public key. Only the ciphertext is ever stored.

``dotenv`` lines are ``KEY="value"``: KEY is the path below the prefix,
upper-cased, every character other than ``A-Z0-9`` turned into ``_`` (the names
``coffer run`` gives). Inside the quotes ``\\``, ``"``, newline and carriage
return are escaped (``\\\\``, ``\\"``, ``\\n``, ``\\r``), which python-dotenv,
docker compose and systemd read back to the value. A ``json`` secret's value is
its JSON text. Two paths that make one KEY can't both go in one file: the
export is refused, naming the key (never a value).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pyrage

from shared.errors import ValidationError

FORMATS = ("json", "dotenv")
#: at most this many secrets in one export (a larger set is split by prefix)
MAX_EXPORT_SECRETS = 10_000
#: at most this many bytes of plaintext in one bundle (built and encrypted in memory)
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
_NOT_KEY = re.compile(r"[^A-Z0-9]")
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def recipient_of(text: str) -> Any:
    """The pyrage recipient ``text`` names, or ``validation_error`` on ``recipient``."""
    text = text.strip()
    try:
        if text.startswith("age1") and len(text) < 200:
            return pyrage.x25519.Recipient.from_str(text)
        if text.startswith("ssh-ed25519 ") and len(text) < 1000:
            return pyrage.ssh.Recipient.from_str(text)
    except pyrage.RecipientError:
        pass
    raise ValidationError.on("recipient", "must be an age X25519 recipient (age1…) or an ssh-ed25519 public key")


def env_key(path: str, prefix: str) -> str:
    """The dotenv KEY of ``path`` exported under ``prefix``."""
    below = path[len(prefix):] if path.startswith(prefix) else path
    below = below.strip("/") or path.rsplit("/", 1)[-1]  # the prefix is the whole path: its last segment
    return _NOT_KEY.sub("_", below.upper())


def check_keys(paths: Sequence[str], prefix: str) -> None:
    """``validation_error`` when two paths would make one dotenv KEY."""
    seen: dict[str, str] = {}
    for path in paths:
        key = env_key(path, prefix)
        if key in seen:
            raise ValidationError.on("prefix", f"'{seen[key]}' and '{path}' both become {key} in a dotenv file; "
                                               "export them with the json format or rename one", key=key)
        seen[key] = path


def render(fmt: str, prefix: str, items: Iterable[tuple[str, Any]]) -> bytes:
    """The plaintext of a bundle: ``items`` are ``(path, value)`` in path order."""
    if fmt == "json":
        return orjson.dumps(dict(items))
    lines = []
    for path, value in items:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        lines.append(f'{env_key(path, prefix)}="{text.translate(_ESCAPES)}"\n')
    return "".join(lines).encode()


def encrypt(plaintext: bytes, recipient: str) -> bytes:
    """The age-format bundle of ``plaintext`` for ``recipient`` (binary, not armored)."""
    return bytes(pyrage.encrypt(plaintext, [recipient_of(recipient)]))
