"""Fixtures of the e2e tests that several modules share: admins of the lease service's real targets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.e2e.lease_targets import pg_admin, redis_admin


@pytest.fixture(scope="module")
async def pg() -> AsyncIterator[dict[str, Any]]:
    """An admin of the password-auth PostgreSQL cluster, for the test module."""
    async with pg_admin() as admin:
        yield admin


@pytest.fixture(scope="module")
async def rds() -> AsyncIterator[dict[str, Any]]:
    """An admin ACL user of Redis, for the test module."""
    async with redis_admin() as admin:
        yield admin
