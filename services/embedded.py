"""``python -m services.embedded`` (``make run``): the whole platform in one process.

Storage: ``COFFER_DATABASE_URL`` if set, else an embedded PostgreSQL (the
``pgserver`` package) under ``COFFER_DATA_DIR``/pg, so data survives a
restart. Bus: RabbitMQ if ``COFFER_AMQP_URL`` is set, else in-process.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import time

from services.platform import Platform
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


def banner(url: str, settings: Settings, started: float, *, first_time: bool = True) -> str:
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
    storage = (
        "PostgreSQL at COFFER_DATABASE_URL" if settings.database_url
        else f"embedded PostgreSQL in {settings.data_dir}/pg"
    )
    return f"""
coffer: ready in {time.monotonic() - started:.1f}s — all five services in one process ({bus}, {storage})

  API:      {url}/v1
  Health:   curl {url}/v1/sys/health

{first_steps if first_time else signed_in}
  Logs: level {settings.log_level} (COFFER_LOG_LEVEL=info to see every request)
  KMS key file: {settings.key_file} (back it up: without it no secret can be read)
  Ctrl-C to stop.
"""


async def main() -> None:
    started = time.monotonic()
    settings = Settings()
    configure(settings.log_level, settings.log_format)
    taken = port_in_use(settings.http_host, settings.http_port)
    if taken:
        raise SystemExit(taken)
    dsn = settings.database_url.get_secret_value() if settings.database_url else embedded_database(settings)
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
        print(banner(platform.url, settings, started, first_time=not await initialised(platform)), flush=True)
        freeze_startup_heap()
        await wait_for_signal()
    finally:
        print("coffer: stopping ...", flush=True)
        await platform.close()


if __name__ == "__main__":
    install_uvloop()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
