"""The embedded mode's PostgreSQL (the ``pgserver`` package) for the admin commands: the one under a data
directory, joined if the platform runs on it (pgserver counts the processes using one server and stops it
when the last one ends), or a new one for a restore."""

from __future__ import annotations

import warnings
from pathlib import Path

from services.admin.bundle import BackupRefused


def embedded_dsn(data_dir: Path, *, create: bool = False) -> str:
    """The embedded PostgreSQL of the installation in ``data_dir``: started, or joined if it runs (pgserver
    shares one server between processes); ``create`` makes a new one where there is none (a restore)."""
    pgdata = (Path(data_dir) / "pg").resolve()
    if not create and not (pgdata / "PG_VERSION").exists():
        raise BackupRefused(f"{data_dir} holds no embedded PostgreSQL ({pgdata}): with COFFER_DATABASE_URL, "
                            "name its database (postgresql://…) instead")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # platformdirs' word on XDG_RUNTIME_DIR says nothing to an operator
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:  # pragma: no cover - the Makefile installs it
            raise BackupRefused("no COFFER_DATABASE_URL and the 'pgserver' package is missing: "
                                "pip install -e '.[embedded]'") from None
        return str(pgserver.get_server(pgdata, cleanup_mode="stop").get_uri())
