"""``--deleted-since``: a source that is none of the three kinds is refused without being repeated (a URL of
another scheme holds a password)."""

from __future__ import annotations

import pytest

from services.admin.shredding import BackupRefused, kind_of


def test_an_unknown_source_is_refused_without_its_text() -> None:
    with pytest.raises(BackupRefused) as refused:
        kind_of("postgresql+asyncpg://coffer:hunter2-secret@db.internal/coffer")
    assert "hunter2" not in str(refused.value) and "db.internal" not in str(refused.value)
    assert kind_of("postgresql://coffer@db/coffer") == "database"
