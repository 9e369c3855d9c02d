"""Where the CLI finds its address, tenant and token: flags, then the environment, then the profile's files.

``$XDG_CONFIG_HOME/coffer/config.toml`` (default ``~/.config``) holds profiles,
one table each::

    [default]
    addr = "https://coffer.example.com"

    [staging]
    addr = "https://coffer.staging.example.com"
    tenant = "ten_…"

``credentials.toml`` beside it holds the token ``coffer login`` got for each
profile (mode 0600 in a 0700 directory, written atomically) — never a client
secret or a password.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from coffer_client.client import DEFAULT_ADDR


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "coffer"


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise SystemExit(f"error: {path} is not valid TOML: {exc}") from None


@dataclass
class Settings:
    profile: str
    addr: str
    tenant: str | None
    token: str | None
    #: where the token came from: "flag", "env", "file" or None
    token_source: str | None


def token_source() -> str:
    """Where the token in use comes from: ``env`` (``COFFER_TOKEN`` beats the file) or ``file``."""
    return "env" if os.environ.get("COFFER_TOKEN") else "file"


def resolve(profile: str | None = None, addr: str | None = None, tenant: str | None = None) -> Settings:
    """Flags beat the environment, which beats the profile's files."""
    name = profile or os.environ.get("COFFER_PROFILE") or "default"
    conf = _read(config_dir() / "config.toml").get(name, {})
    creds = _read(config_dir() / "credentials.toml").get(name, {})
    token, source = None, None
    if token_source() == "env":
        token, source = os.environ["COFFER_TOKEN"], "env"
    elif creds.get("token"):
        token, source = str(creds["token"]), "file"
    return Settings(
        profile=name,
        addr=(addr or os.environ.get("COFFER_ADDR") or conf.get("addr") or creds.get("addr")
              or DEFAULT_ADDR).rstrip("/"),
        tenant=tenant or os.environ.get("COFFER_TENANT") or conf.get("tenant") or None,
        token=token, token_source=source)


def store_token(profile: str, addr: str, token: str, expires_at: str | None) -> Path:
    """The profile's token in ``credentials.toml``, mode 0600, replaced atomically."""
    directory = config_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "credentials.toml"
    data = _read(path)
    data[profile] = {"addr": addr, "token": token, **({"expires_at": expires_at} if expires_at else {})}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".credentials-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            tomli_w.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def forget_token(profile: str) -> bool:
    path = config_dir() / "credentials.toml"
    data = _read(path)
    if profile not in data:
        return False
    del data[profile]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        tomli_w.dump(data, f)
    os.replace(tmp, path)
    return True
