"""``python -m services.provision``: write each service's credentials, or docker-compose's files."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

import services.provision as package
from services.provision.compose import compose_files
from services.provision.credentials import provision
from services.provision.installation import TAKE_OVER_HELP
from shared.config import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m services.provision",
                                     description=package.__doc__.splitlines()[0] if package.__doc__ else None)
    parser.add_argument("--env-dir", type=Path,
                        help="write <service>.env (mode 0600) with each service's own credentials here")
    parser.add_argument("--compose", type=Path, metavar="DEPLOY_DIR",
                        help="write docker-compose's broker definitions and PostgreSQL init script there")
    parser.add_argument("--take-over", action="store_true", help=TAKE_OVER_HELP)
    args = parser.parse_args()
    if args.compose:
        for path, text in compose_files(args.compose).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"coffer: wrote {path}")
        return
    if not args.env_dir:
        parser.error("give --env-dir (or --compose)")
    creds = asyncio.run(provision(Settings(), take_over=args.take_over or None))
    users = {s: c.amqp_user for s, c in creds.items()}
    args.env_dir.mkdir(parents=True, exist_ok=True)
    for service, c in creds.items():
        path = args.env_dir / f"{service}.env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in c.env(users).items())
        print(f"coffer: wrote {path} (0600)")
