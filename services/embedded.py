"""``python -m services.embedded`` (``make run``): the whole platform in one process.

Storage: ``COFFER_DATABASE_URL`` if set, else an embedded PostgreSQL (the
``pgserver`` package) under ``COFFER_DATA_DIR``/pg, so data survives a
restart. Bus: RabbitMQ if ``COFFER_AMQP_URL`` is set, else in-process.

Keys: ``COFFER_SEAL=file`` (the default) reads the clear key file as always.
Any other seal starts sealed (shared/custody.py): the sealed gateway
(services/sealed.py) answers on the gateway's address until the seal opens
(shares, or the KMS / HSM by itself); then the platform starts with the
unsealed keys on the same address. ``POST /v1/sys/seal`` (root admin) stops
the platform (not the process) and the sealed gateway answers again.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import socket
import sys
import time
from typing import Any

import asyncpg

from services.platform import Platform
from shared import custody as custody_mod
from shared.config import Settings
from shared.logging import configure
from shared.runtime import freeze_startup_heap, install_uvloop, wait_for_signal


def embedded_database(settings: Settings) -> str:
    """Start (or reuse) the embedded PostgreSQL under the data dir; its DSN."""
    try:
        import pgserver
    except ImportError:  # pragma: no cover - the Makefile installs it
        raise SystemExit("no COFFER_DATABASE_URL and the 'pgserver' package is missing: "
                         "pip install -e '.[embedded]'") from None
    pgdata = (settings.data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    print(f"coffer: starting embedded PostgreSQL in {pgdata} ...", flush=True)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return str(server.get_uri())


def port_in_use(host: str, port: int) -> str | None:
    """One line saying the gateway's port is taken, or None: checked before PostgreSQL starts (seconds)."""
    if not port:
        return None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return None  # aiohttp will say what is wrong with the host
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp binds
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"coffer: port {port} is in use on {host}: stop what holds it, or set COFFER_HTTP_PORT"
    return None


async def initialised(platform: Platform) -> bool:
    """Has ``sys/init`` been done on this installation (a root tenant exists)?"""
    gateway = platform.runtimes.get("gateway")
    if gateway is None or gateway.pool is None:
        return True
    return bool(await gateway.pool.fetchval("SELECT EXISTS (SELECT 1 FROM tenants WHERE parent_id IS NULL)"))


def banner(url: str, settings: Settings, started: float, *, first_time: bool = True,
           vault_url: str | None = None) -> str:
    first_steps = f"""  First time: create the root tenant and an admin (its client secret is shown once, keep it):
    curl -X POST {url}/v1/sys/init
  Then get a token with the returned client_id / client_secret:
    curl -X POST {url}/v1/auth/token -H 'Content-Type: application/json' \\
         -d '{{"client_id": "...", "client_secret": "..."}}'
  and call the API with:  -H "Authorization: Bearer <access_token>"  (README: First steps)
"""
    signed_in = """  Initialised: sign in with your admin's client id and secret (POST /v1/auth/token, or coffer login).
  Lost them? python -m services.gateway recover-admin (README: Run it)
"""
    bus = "RabbitMQ" if settings.amqp_url else "in-process bus"
    keys = (f"KMS key file: {settings.key_file} (back it up: without it no secret can be read)"
            if settings.seal == "file" else
            f"Seal: {settings.seal}, sealed keyring {settings.sealed_keyring_file} (back it up; it opens nothing "
            "without the " + {"shamir": "shares", "awskms": "KMS key", "pkcs11": "HSM key"}[settings.seal] + ")"
            + ("\n  Seal again (root admin): curl -X POST " + url + "/v1/sys/seal -H \"Authorization: Bearer ...\""))
    storage = (
        "PostgreSQL at COFFER_DATABASE_URL" if settings.database_url
        else f"embedded PostgreSQL in {settings.data_dir}/pg"
    )
    vault_line = (f"  Vault:    VAULT_ADDR={vault_url} (the Vault-compatible listener; README: Coming from Vault)\n"
                  if vault_url else "")
    return f"""
coffer: ready in {time.monotonic() - started:.1f}s — all five services in one process ({bus}, {storage})

  API:      {url}/v1
  Health:   curl {url}/v1/sys/health
{vault_line}
{first_steps if first_time else signed_in}
  Logs: level {settings.log_level} (COFFER_LOG_LEVEL=info to see every request)
  {keys}
  Ctrl-C to stop.
"""


async def main() -> None:
    started = time.monotonic()
    settings = Settings()
    configure(settings.log_level, settings.log_format)
    custody_mod.check(settings)  # a clear key file under another seal, a keyring under another: refused now
    taken = port_in_use(settings.http_host, settings.http_port)
    if taken:
        raise SystemExit(taken)
    dsn = settings.database_url.get_secret_value() if settings.database_url else embedded_database(settings)
    if settings.seal != "file":
        await run_sealed(settings, dsn, started)
        return
    platform = Platform({}, dsn, name="coffer-embedded")  # each service reads its settings from the env
    try:
        try:
            await platform.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:  # taken between the check and the start
                raise SystemExit(port_in_use(settings.http_host, settings.http_port)
                                 or f"coffer: port {settings.http_port} is in use: set COFFER_HTTP_PORT") from None
            raise
        assert platform.url is not None
        print(banner(platform.url, settings, started, first_time=not await initialised(platform),
                     vault_url=platform.urls.get("vault")), flush=True)
        freeze_startup_heap()
        await wait_for_signal()
    finally:
        print("coffer: stopping ...", flush=True)
        await platform.close()


async def database_initialised(dsn: str, settings: Settings) -> bool:
    """Has ``sys/init`` been done in this database (asked while sealed: no service runs)?"""
    conn = await asyncpg.connect(dsn)
    try:
        table = f'"{settings.schema_for("gateway")}".tenants'
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            return False
        return bool(await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE parent_id IS NULL)"))
    finally:
        await conn.close()


async def run_sealed(settings: Settings, dsn: str, started: float) -> None:
    """Any seal but ``file``: sealed gateway until unsealed, then the platform; again after ``sys/seal``."""
    from services.gateway.settings import GatewaySettings
    from services.gateway.state import STATE
    from services.sealed import Opened, serve_sealed, stop_event, unsealed_line

    custody = custody_mod.Custody(settings)
    custody_mod.install(custody)
    began = [started]  # the banner's clock: from the process's start, then from each seal

    async def open_platform(kms: Any) -> Opened:
        platform = Platform({}, dsn, name="coffer-embedded", kms=kms)
        try:
            await platform.start()
        except BaseException:
            await platform.close()
            raise

        async def say() -> str:
            assert platform.url is not None
            first = not await initialised(platform)
            return unsealed_line(custody) + "\n" + banner(platform.url, settings, began[0], first_time=first,
                                                           vault_url=platform.urls.get("vault"))

        async def close() -> None:
            await platform.close()
            began[0] = time.monotonic()

        return platform.app[STATE], say, close

    try:
        await serve_sealed(custody, GatewaySettings(), stop_event(),
                           functools.partial(database_initialised, dsn, settings), open_platform)
    finally:
        custody_mod.install(None)


if __name__ == "__main__":
    install_uvloop()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
    except custody_mod.CustodyRefused as refused:
        print(refused.code, file=sys.stderr, flush=True)
        sys.exit(2)
