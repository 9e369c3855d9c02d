"""The command line of ``python -m services.admin`` (also ``coffer-admin``): ``backup`` and ``restore``.

Both read the installation's settings as every process does (``COFFER_DATABASE_URL``, or the embedded
PostgreSQL under ``COFFER_DATA_DIR``; ``COFFER_SEAL`` and its files; ``COFFER_SCHEMA_PREFIX``). They print
what they do, one line a step; no key, value or token is ever printed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from services.admin.backup import backup
from services.admin.bundle import BackupRefused, identities_of, recipients_of
from services.admin.embedded import embedded_dsn
from services.admin.restore import restore
from shared.config import Settings
from shared.custody import CustodyRefused
from shared.errors import CofferError
from shared.logging import configure
from shared.runtime import install_uvloop


def say(line: str) -> None:
    print(line, flush=True)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m services.admin",
                                  description="Backups of a Coffer installation, and their restore into an empty one.")
    top.add_argument("--log-level", default="warning", help="of the platform's own log lines, on standard error "
                     "(default warning: the steps are printed anyway)")
    sub = top.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup", help="a consistent, age-encrypted backup of the installation (it may be running)")
    b.add_argument("-r", "--recipient", action="append", default=[], help="an age recipient (age1…) or an ssh "
                   "public key; repeat for several")
    b.add_argument("-R", "--recipients-file", action="append", default=[], type=Path,
                   help="a file of recipients, one a line (as age -R)")
    b.add_argument("-o", "--out", type=Path, help="the backup file (default coffer-backup-<UTC time>.age; "
                   "never overwritten)")
    r = sub.add_parser("restore", help="a backup into an EMPTY installation (fresh database, empty data "
                       "directory), then checked")
    r.add_argument("backup", type=Path)
    r.add_argument("-i", "--identity", type=Path, required=True, help="an age identity file (as age -i), "
                   "or an ssh private key")
    r.add_argument("--deleted-since", action="append", default=[], metavar="SOURCE",
                   help="what the installation became after the backup: its database (postgresql://…), an "
                   "embedded installation's data directory, or a later backup; tenants it no longer has keep no "
                   "key in the restore")
    r.add_argument("--forget-tenant", action="append", default=[], metavar="TENANT_ID",
                   help="a tenant deleted after the backup: its keys are destroyed in the restore")
    r.add_argument("--sample", type=int, default=20, help="how many secrets to read back (default 20)")
    return top


async def _database(settings: Settings, *, create: bool) -> str:
    if settings.database_url is None:
        say(f"admin: embedded PostgreSQL in {settings.data_dir / 'pg'}")
        return await asyncio.to_thread(embedded_dsn, settings.data_dir, create=create)
    dsn = settings.database_url.get_secret_value()
    if create:
        from services.provision import ensure_database

        await ensure_database(dsn, say=say)
    return dsn


async def run(argv: Sequence[str] | None = None, settings: Settings | None = None, stdin: Any = None) -> int:
    args = parser().parse_args(argv)
    settings = settings or Settings()
    try:
        if args.command == "backup":
            lines = list(args.recipient)
            for path in args.recipients_file:
                try:
                    lines += path.read_text().splitlines()
                except OSError as exc:
                    raise BackupRefused(f"{path} can't be read ({type(exc).__name__})") from None
            recipients = recipients_of(lines)
            out = args.out or Path(f"coffer-backup-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.age")
            await backup(settings, await _database(settings, create=False), out, recipients, say)
            return 0
        identities = identities_of(args.identity)
        verdict = await restore(settings, await _database(settings, create=True), args.backup, identities,
                                deleted_since=args.deleted_since, forget=args.forget_tenant,
                                sample=max(args.sample, 0), stdin=stdin, say=say)
        return 0 if verdict.ok else 3
    except BackupRefused as exc:
        say(f"{args.command}: refused: {exc}")
    except CustodyRefused as exc:
        say(f"{args.command}: the seal did not open: {exc.code}")
    except CofferError as exc:  # an EncryptionError of a key file, a refused keyring: its message, no key
        say(f"{args.command}: failed: {exc.message}")
    except OSError as exc:  # the database can't be reached, a file can't be written: no DSN is in these
        say(f"{args.command}: failed: {type(exc).__name__}: {exc}")
    except asyncpg.PostgresError as exc:  # its message may quote a row: the kind only
        say(f"{args.command}: failed: the database refused ({type(exc).__name__}, SQLSTATE {exc.sqlstate}); "
            "nothing was committed")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    configure(args.log_level, "console")
    install_uvloop()
    return asyncio.run(run(argv))


