"""``python -m services.embedded`` (``make run``): the whole platform in one process.

Storage: ``COFFER_DATABASE_URL`` if set, else an embedded PostgreSQL (the
``pgserver`` package) under ``COFFER_DATA_DIR``/pg, so data survives a
restart. Bus: RabbitMQ if ``COFFER_AMQP_URL`` is set, else in-process.
"""

from __future__ import annotations

import asyncio
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


def banner(url: str, settings: Settings, started: float) -> str:
    bus = "RabbitMQ" if settings.amqp_url else "in-process bus"
    storage = (
        "PostgreSQL at COFFER_DATABASE_URL" if settings.database_url
        else f"embedded PostgreSQL in {settings.data_dir}/pg"
    )
    return f"""
coffer: ready in {time.monotonic() - started:.1f}s — all five services in one process ({bus}, {storage})

  API:      {url}/v1
  Health:   curl {url}/v1/sys/health

  First time? Create the root tenant and an admin (shown once, keep it safe):
    curl -X POST {url}/v1/sys/init
  Then get a token with the returned client_id / client_secret:
    curl -X POST {url}/v1/auth/token -H 'Content-Type: application/json' \\
         -d '{{"client_id": "...", "client_secret": "..."}}'
  and call the API with:  -H "Authorization: Bearer <access_token>"

  KMS key file: {settings.key_file} (back it up: without it no secret can be read)
  Ctrl-C to stop.
"""


async def main() -> None:
    started = time.monotonic()
    settings = Settings()
    configure(settings.log_level, settings.log_format)
    dsn = settings.database_url.get_secret_value() if settings.database_url else embedded_database(settings)
    platform = Platform({}, dsn, name="coffer-embedded")  # each service reads its settings from the env
    try:
        await platform.start()
        assert platform.url is not None
        print(banner(platform.url, settings, started), flush=True)
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
