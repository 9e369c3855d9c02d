"""shared.failures: which database failures are the database away, and which a refused statement."""

from __future__ import annotations

import asyncpg
import pytest

from shared.failures import statement_refused, storage_unavailable

REFUSED = [asyncpg.ForeignKeyViolationError("delivery gone"), asyncpg.UniqueViolationError("dup"),
           asyncpg.CharacterNotInRepertoireError("NUL"), asyncpg.exceptions.DataError("bad argument")]
AWAY = [ConnectionRefusedError(), asyncpg.exceptions.CannotConnectNowError("starting up"),
        asyncpg.exceptions.AdminShutdownError("shutting down"),
        asyncpg.InterfaceError("cannot perform operation: connection is closed")]


@pytest.mark.parametrize("exc", REFUSED, ids=lambda e: type(e).__name__)
def test_a_refused_statement_is_not_the_database_away(exc: Exception) -> None:
    assert statement_refused(exc) and not storage_unavailable(exc)


@pytest.mark.parametrize("exc", [*AWAY, RuntimeError("ours"), TimeoutError()], ids=lambda e: type(e).__name__)
def test_the_database_away_or_a_failure_of_ours_is_not_a_refused_statement(exc: Exception) -> None:
    assert not statement_refused(exc)
