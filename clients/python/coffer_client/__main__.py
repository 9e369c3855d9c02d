"""``python -m coffer_client``: the ``coffer`` command."""

from coffer_client.cli import main

main()
