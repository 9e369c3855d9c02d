"""``python -m services.provision``: write each service's credentials, docker-compose's files, or an event consumer."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from pathlib import Path

from yarl import URL

import services.provision as package
from services.provision.compose import compose_files
from services.provision.consumers import add_consumer, remove_consumer
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
    parser.add_argument("--consumer", metavar="NAME",
                        help="make (or remake) an event consumer: a broker user that may read only its own queue, "
                             "bound to --events; prints its URL")
    parser.add_argument("--events", metavar="PATTERNS", help="with --consumer: event types, comma-separated "
                                                             "('secret.*,lease.*')")
    parser.add_argument("--remove-consumer", metavar="NAME", help="remove an event consumer, its user and its queues")
    args = parser.parse_args()
    if args.consumer or args.remove_consumer:
        _consumer(parser, args)
        return
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


def _consumer(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--consumer NAME --events PATTERNS`` / ``--remove-consumer NAME`` (services/provision/consumers.py), with the
    operator's COFFER_AMQP_URL. The consumer's URL alone on stdout; what was done on stderr."""
    settings = Settings()
    if settings.amqp_url is None:
        parser.error("needs COFFER_AMQP_URL of a RabbitMQ administrator (with the installation's vhost)")
    admin = URL(settings.amqp_url.get_secret_value())
    say = functools.partial(print, file=sys.stderr)
    if args.remove_consumer:
        asyncio.run(remove_consumer(admin, args.remove_consumer, say))
        return
    if not args.events:
        parser.error("--consumer NAME goes with --events PATTERNS")
    print(asyncio.run(add_consumer(admin, args.consumer, args.events.split(","), say)))
