"""SQL helpers of the ``postgresql`` engine: SCRAM-SHA-256 verifiers, the guards against a too powerful admin
or user, quoting, and the checks and rendering of a role's statement templates.

Passwords reach the target only as SCRAM-SHA-256 verifiers (RFC 5802/7677, computed here): ``{{password}}``
in a template renders as the verifier, which PostgreSQL stores as it is.
"""

from __future__ import annotations

import base64
import re
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from services.lease.engines.base import role_error

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_KNOWN = {"name", "password", "expiration"}
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)

#: an admin or a leased user holding one of these (or a superuser role) could run programs or read and write
#: files on the database host
SERVER_ROLES = ("pg_execute_server_program", "pg_read_server_files", "pg_write_server_files")
_ADMIN_GUARD, _USER_GUARD = "CF001", "CF002"  # SQLSTATEs of our own guards (class CF is no one else's)


def _powerful(who: str, quote: str) -> str:
    """SQL: does role ``who`` (an expression giving its oid) hold a superuser or server-file/program role?"""
    names = ", ".join(f"{quote}{r}{quote}" for r in SERVER_ROLES)
    return (f"EXISTS (SELECT 1 FROM pg_roles p WHERE (p.rolsuper OR p.rolname IN ({names}))"
            f" AND pg_has_role({who}, p.oid, {quote}MEMBER{quote}))")


def guard(username: str | None) -> str:
    """A ``DO`` statement that fails (SQLSTATE CF001 / CF002) while the session's admin, or ``username``, is
    too powerful. It holds no single quote and only dollar quotes with a fresh random tag, so no statement
    before it in the same message can open a quote that closes inside it: it runs as written or the
    message fails to parse (and nothing runs)."""
    tag = f"$g{secrets.token_hex(6)}$"
    checks = [f"IF {_powerful('session_user', tag)} THEN RAISE EXCEPTION USING ERRCODE = {tag}{_ADMIN_GUARD}{tag};"
              " END IF;"]
    if username is not None:
        user = f"(SELECT u.oid FROM pg_roles u WHERE u.rolname = {tag}{username}{tag})"
        checks.append(f"IF {_powerful(user, tag)} THEN RAISE EXCEPTION USING ERRCODE = {tag}{_USER_GUARD}{tag};"
                      " END IF;")
    body = f"$d{secrets.token_hex(6)}$"
    return f"DO {body} BEGIN {' '.join(checks)} END {body}"


def scram_verifier(password: str, *, iterations: int = SCRAM_ITERATIONS) -> str:
    """The ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` PostgreSQL stores for ``password``."""
    salt = secrets.token_bytes(16)
    salted = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password.encode())

    def mac(key: bytes, text: bytes) -> bytes:
        h = hmac.HMAC(key, hashes.SHA256())
        h.update(text)
        return h.finalize()

    digest = hashes.Hash(hashes.SHA256())
    digest.update(mac(salted, b"Client Key"))
    stored, server = digest.finalize(), mac(salted, b"Server Key")
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}"


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def render(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _statements(body: dict[str, Any], field: str, *, required: bool, allowed: set[str]) -> list[str] | None:
    statements = body.get(field)
    if statements is None:
        if required:
            raise role_error(f"a postgresql role needs '{field}' (SQL templates with {{{{name}}}})", field)
        return None
    if not statements or any(not s.strip() or len(s) > 8192 or "\x00" in s for s in statements):
        raise role_error(f"'{field}': 1-20 non-empty statements of at most 8 KiB", field)
    for statement in statements:
        unknown = {m.group(1) for m in _PLACEHOLDER.finditer(statement)} - allowed
        if unknown:
            raise role_error(f"'{field}' names unknown placeholders: {', '.join(sorted(unknown))[:80]}", field)
    if not any("{{name}}" in s.replace(" ", "") for s in statements):
        raise role_error(f"'{field}' must name the user ({{{{name}}}})", field)
    return list(statements)
