"""Which unexpected exceptions are the database's: away for a moment (``service_unavailable``, 503, try
again) or failing (``storage_error``, 500); anything else stays ``internal_error``."""

from __future__ import annotations

import asyncpg

from shared.errors import CofferError, ServiceUnavailable, StorageError

# the database refused or cut the connection, or is shutting down or starting up (a restart, a failover):
# transient, and an answer the client can act on (retry; a CAS write tells whether it was applied)
_AWAY = (ConnectionError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
         asyncpg.exceptions.TooManyConnectionsError, asyncpg.exceptions.InternalClientError)


def storage_failure(exc: BaseException) -> bool:
    """Did ``exc`` come from the database: an SQL error, a lost or refused connection?"""
    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError) or storage_unavailable(exc)


def storage_unavailable(exc: BaseException) -> bool:
    """Is the database away for a moment rather than failing?

    Besides the errors that say so, asyncpg has two without a class of their own, both seen by ``make
    chaos`` at the instant PostgreSQL restarted: ``InterfaceError("cannot perform operation: connection
    is closed")``, and an ``InternalClientError`` from the pool's connection holders while the connection
    they held was lost (the pool replaces it on the next acquire)."""
    if isinstance(exc, _AWAY):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc)


def statement_refused(exc: BaseException) -> bool:
    """Did the database (or asyncpg, checking the arguments) refuse this statement, the connection being
    fine? Then another statement, with other data, may still succeed (``shared.groups``)."""
    return isinstance(exc, asyncpg.PostgresError | asyncpg.exceptions.DataError) and not storage_unavailable(exc)


def storage_error(exc: BaseException, whose: str) -> CofferError:
    """The answer to a database failure ``exc`` (``storage_failure(exc)`` holds) of ``whose`` storage. The
    message names no SQL, no value and not the exception's text."""
    if storage_unavailable(exc):
        return ServiceUnavailable(f"{whose} database is unavailable; try again")
    return StorageError(f"{whose} storage failed")
