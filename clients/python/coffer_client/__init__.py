"""Coffer's Python client: ``Client`` (sync) and ``AsyncClient`` (asyncio), and the ``coffer`` command.

    from coffer_client import Client

    with Client("http://127.0.0.1:8700") as coffer:
        coffer.login_client("cli_…", client_secret)
        coffer.put_secret("app/db-password", "s3cret")
        print(coffer.get_secret("app/db-password").value)
"""

from coffer_client import errors
from coffer_client._events import Event
from coffer_client.client import AsyncClient, Client
from coffer_client.errors import CofferError
from coffer_client.models import Engine, Issued, Lease, LeaseCredentials, Secret, SecretMeta, Token

__all__ = ["AsyncClient", "Client", "CofferError", "Engine", "Event", "Issued", "Lease", "LeaseCredentials", "Secret",
           "SecretMeta", "Token", "errors"]
__version__ = "0.1.0"
