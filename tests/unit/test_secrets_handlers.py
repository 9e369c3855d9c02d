"""The secrets service's handlers and domain, on an in-memory store: the rules without a broker or a database.

Calls go through the in-process bus exactly as in production (a JSON
payload in, the context with tenant and quotas, a JSON result or a
vocabulary error out); the
repository's SQL (compare-and-set, quotas under racing writers) is the
integration tests' business.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.secrets.domain import ValidWrite
from services.secrets.handlers import SecretsHandlers
from shared.bus import InProcessBus
from shared.context import RequestContext
from shared.contracts import rpc_table
from shared.contracts.secrets import SecretMeta
from shared.cursors import CursorCodec
from shared.errors import (
    CofferError,
    Forbidden,
    InvalidCursor,
    InvalidPath,
    InvalidSecretType,
    QuotaExceeded,
    SecretExists,
    SecretExpired,
    SecretNotFound,
    ValidationError,
    VersionConflict,
    VersionNotFound,
)


@dataclass
class Secret:
    versions: list[tuple[SecretMeta, bytes]] = field(default_factory=list)
    deleted_at: datetime | None = None


class FakeSecretsStore:
    """``SecretsStore`` in memory (its semantics, not its SQL)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], Secret] = {}

    async def put(self, tenant_id: str, identity_id: str | None, request_id: str, path: str, write: ValidWrite,
                  expected: int | None, max_secrets: int | None = None,
                  check: Any = None) -> tuple[bool, SecretMeta]:
        if check is not None:
            check([])  # no secret policies in this store
        secret = self.secrets.get((tenant_id, path))
        if secret is None and max_secrets is not None and \
                sum(t == tenant_id for t, _ in self.secrets) >= max_secrets:
            raise QuotaExceeded("the tenant's max_secrets quota is reached")
        if secret is not None and secret.deleted_at is not None:
            raise SecretExists("a deleted secret is kept at this path")
        current = len(secret.versions) if secret else 0
        if expected is not None and expected != current:
            raise VersionConflict(details={"current_version": current})
        now = datetime.now(UTC)
        meta = SecretMeta(path=path, version=current + 1, secret_type=write.secret_type, metadata=write.metadata,
                          expires_at=write.expires_at, created_at=now, created_by=identity_id, updated_at=now,
                          deleted_at=None, purge_after=None)
        self.secrets.setdefault((tenant_id, path), Secret()).versions.append((meta, write.plaintext))
        return current == 0, meta

    def _live(self, tenant_id: str, path: str) -> Secret:
        secret = self.secrets.get((tenant_id, path))
        if secret is None or secret.deleted_at is not None:
            raise SecretNotFound(details={"path": path})
        return secret

    async def get(self, tenant_id: str, path: str, version: int | None) -> tuple[SecretMeta, bytes]:
        secret = self._live(tenant_id, path)
        if version is not None and not 1 <= version <= len(secret.versions):
            raise VersionNotFound(details={"path": path, "version": version})
        return secret.versions[(version or len(secret.versions)) - 1]

    async def versions(self, tenant_id: str, path: str, before: int | None, limit: int) -> list[SecretMeta]:
        metas = [m for m, _ in reversed(self._live(tenant_id, path).versions)]
        return [m for m in metas if before is None or m.version < before][:limit]

    async def list(self, tenant_id: str, prefix: str, after: str | None, limit: int) -> list[SecretMeta]:
        found = sorted((p, s) for (t, p), s in self.secrets.items()
                       if t == tenant_id and p.startswith(prefix) and s.deleted_at is None)
        return [s.versions[-1][0] for p, s in found if after is None or p > after][:limit]

    async def soft_delete(self, tenant_id: str, request_id: str, path: str, retention: int) -> None:
        self._live(tenant_id, path).deleted_at = datetime.now(UTC)

    async def restore(self, tenant_id: str, request_id: str, path: str) -> SecretMeta:
        secret = self.secrets.get((tenant_id, path))
        if secret is None:
            raise SecretNotFound(details={"path": path})
        secret.deleted_at = None
        return secret.versions[-1][0]

    async def purge(self, tenant_id: str, request_id: str, path: str) -> None:
        if self.secrets.pop((tenant_id, path), None) is None:
            raise SecretNotFound(details={"path": path})


@dataclass
class Service:
    """The handlers on the in-process bus, over a fake store: calls go through the wire as in production."""

    store: FakeSecretsStore
    bus: InProcessBus

    async def call(self, method: str, payload: dict[str, Any], context: RequestContext) -> Any:
        return await self.bus.call("secrets", method, payload, context)


@pytest.fixture
async def svc() -> AsyncIterator[Service]:
    store, bus = FakeSecretsStore(), InProcessBus()
    await bus.start()
    await bus.serve("secrets", rpc_table(SecretsHandlers(store, CursorCodec(secrets.token_bytes(32)),
                                                         retention_seconds=60)))
    yield Service(store, bus)
    await bus.close()


def ctx(tenant: str = "ten_a", **quotas: int) -> RequestContext:
    return RequestContext(tenant_id=tenant, identity_id="idn_1", quotas=quotas)


async def test_versions_compare_and_set_and_create_only(svc: Service) -> None:
    first = await svc.call("put", {"path": "app/db", "value": "v1"}, ctx())
    assert first["created"] is True and first["secret"]["version"] == 1
    second = await svc.call("put", {"path": "app/db", "value": "v2", "expected_version": 1}, ctx())
    assert second["created"] is False and second["secret"]["version"] == 2
    for expected in (1, 0):  # stale, and create-only on an existing secret
        with pytest.raises(VersionConflict):
            await svc.call("put", {"path": "app/db", "value": "v3", "expected_version": expected}, ctx())
    got = await svc.call("get", {"path": "app/db", "version": 1}, ctx())
    assert got["value"] == "v1" and got["version"] == 1
    with pytest.raises(VersionNotFound):
        await svc.call("get", {"path": "app/db", "version": 9}, ctx())


async def test_the_quota_comes_from_the_context_and_carries_retry_after(svc: Service) -> None:
    await svc.call("put", {"path": "q/1", "value": "v"}, ctx(max_secrets=1))
    await svc.call("put", {"path": "q/1", "value": "v2"}, ctx(max_secrets=1))  # an update is no create
    with pytest.raises(QuotaExceeded) as caught:
        await svc.call("put", {"path": "q/2", "value": "v"}, ctx(max_secrets=1))
    assert caught.value.headers["Retry-After"].isdigit()


async def test_an_expired_secret_is_gone_and_soft_delete_restores(svc: Service) -> None:
    past = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    await svc.call("put", {"path": "exp/a", "value": "v", "expires_at": past}, ctx())
    version = svc.store.secrets[("ten_a", "exp/a")].versions
    version[0] = (version[0][0].model_copy(update={"expires_at": datetime.now(UTC)}), version[0][1])  # time passes
    with pytest.raises(SecretExpired):
        await svc.call("get", {"path": "exp/a"}, ctx())
    await svc.call("put", {"path": "del/a", "value": "v"}, ctx())
    await svc.call("delete", {"path": "del/a"}, ctx())
    with pytest.raises(SecretNotFound):
        await svc.call("get", {"path": "del/a"}, ctx())
    with pytest.raises(SecretExists):
        await svc.call("put", {"path": "del/a", "value": "again"}, ctx())
    assert (await svc.call("restore", {"path": "del/a"}, ctx()))["version"] == 1


@pytest.mark.parametrize(("payload", "error"), [
    ({"path": "a/../b", "value": "v"}, InvalidPath),
    ({"path": "/a", "value": "v"}, InvalidPath),
    ({"path": "a/" * 20 + "b", "value": "v"}, InvalidPath),
    ({"path": "a", "value": "v", "secret_type": "nope"}, InvalidSecretType),
    ({"path": "a", "value": "not an object", "secret_type": "json"}, ValidationError),
    ({"path": "a", "value": {"k": "v"}}, ValidationError),
    ({"path": "a", "value": "x" * (64 * 1024 + 1)}, ValidationError),
    ({"path": "a", "value": "not PEM", "secret_type": "certificate"}, ValidationError),
    ({"path": "a", "value": "v", "ttl": "1h", "expires_at": "2999-01-01T00:00:00Z"}, ValidationError),
    ({"path": "a", "value": "v", "expires_at": "2000-01-01T00:00:00Z"}, ValidationError),
    ({"path": "a", "value": "v", "unknown": 1}, ValidationError),
    ({"value": "v"}, ValidationError),
])
async def test_writes_that_break_a_rule_are_refused_naming_the_rule_not_the_value(
        svc: Service, payload: dict[str, Any], error: type[CofferError]) -> None:
    with pytest.raises(error) as caught:
        await svc.call("put", payload, ctx())
    assert "x" * 100 not in str(caught.value.to_wire()) and "not PEM" not in str(caught.value.to_wire())


async def test_tenants_do_not_see_each_other_and_a_request_needs_a_tenant(svc: Service) -> None:
    await svc.call("put", {"path": "shared/name", "value": "a's"}, ctx("ten_a"))
    with pytest.raises(SecretNotFound):
        await svc.call("get", {"path": "shared/name"}, ctx("ten_b"))
    assert (await svc.call("list", {"prefix": "shared/"}, ctx("ten_b")))["items"] == []
    with pytest.raises(Forbidden):
        await svc.call("get", {"path": "shared/name"}, RequestContext())


async def test_lists_page_with_cursors_bound_to_tenant_and_query(svc: Service) -> None:
    for i in range(5):
        await svc.call("put", {"path": f"list/k{i}", "value": "v"}, ctx())
    seen, cursor = [], None
    while True:
        page = await svc.call("list", {"prefix": "list/", "limit": 2, "cursor": cursor}, ctx())
        seen += [item["path"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
        with pytest.raises(InvalidCursor):  # another tenant, or another query, can't continue it
            await svc.call("list", {"prefix": "list/", "limit": 2, "cursor": cursor}, ctx("ten_b"))
        with pytest.raises(InvalidCursor):
            await svc.call("list", {"prefix": "list/k", "limit": 2, "cursor": cursor}, ctx())
    assert seen == [f"list/k{i}" for i in range(5)]
