"""Which unexpected exceptions are storage failures (answered ``storage_error``, not ``internal_error``)."""

from __future__ import annotations

import asyncpg


def storage_failure(exc: BaseException) -> bool:
    """Did ``exc`` come from the database: an SQL error, a lost or refused connection?

    Such a failure is ``storage_error`` (500) wherever it happens, in a
    service behind the bus or in the gateway itself; anything else unexpected
    stays ``internal_error``. Either way the message names no SQL and no value.
    """
    return isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | ConnectionError)
