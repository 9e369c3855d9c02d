"""The ``rabbitmq`` engine: users made and removed through the management HTTP API (as Vault's does).

Config ``{management_url, username, password}``: a user tagged
``administrator`` (only those may manage users). A role is ``vhosts``
(``{"/": {"configure": "", "write": ".*", "read": ".*"}}``) and ``tags``,
only those the operator lists in ``COFFER_ENGINE_RABBITMQ_TAGS`` (none by
default): a leased ``administrator`` could reset any user's password.
Revocation deletes the user, then closes every connection it still has open
(RabbitMQ keeps an authenticated connection alive after its user is gone).
Every request goes through the outbound guard at connect time, to the
operator's allowed ranges only; plain ``http`` is allowed, as management
listeners on private networks usually are.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from services.lease.engines.base import (
    Engine,
    Limits,
    TargetDown,
    TargetRefused,
    TargetRejected,
    field_of,
    only_fields,
    role_error,
)
from shared.errors import InvalidConfig
from shared.outbound import OutboundPolicy, OutboundRefused, guarded_connector, parse_url

_TAG = re.compile(r"^[a-z_]{1,40}$")
_VHOST = re.compile(r"^[^\x00-\x1f\x7f]{1,255}$")
_PERMISSIONS = ("configure", "write", "read")
#: the form check of a management URL (http allowed); its addresses are the engine policy's, at connect time
_ANY_HTTP = OutboundPolicy(allow_http=True)


def _segment(text: str) -> str:
    return quote(text, safe="")


async def _management_refusal(response: aiohttp.ClientResponse) -> bool:
    """Is this 401/403 the management API's own (``{"error": "not_authorized", …}``), not another server's?"""
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return False
    return isinstance(body, dict) and body.get("error") in ("not_authorized", "access_refused")


class RabbitEngine(Engine):
    type = "rabbitmq"
    role_fields = ("vhosts", "tags")

    def __init__(self, public: dict[str, Any], secret: dict[str, Any], reach: Any) -> None:
        super().__init__(public, secret, reach)
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def parse_config(cls, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        only_fields(raw, ("management_url", "username", "password"))
        url = field_of(raw, "management_url", str)
        username = field_of(raw, "username", str, max_length=200)
        password = field_of(raw, "password", str, max_length=1000)
        try:
            parsed = parse_url(url, _ANY_HTTP)
        except OutboundRefused as exc:
            raise InvalidConfig(f"config.management_url: {exc}", details={"field": "config.management_url"}) from None
        if parsed.query_string or not username or not password:
            raise InvalidConfig("config.management_url takes no query; username and password are required",
                                details={"field": "config"})
        base = str(parsed.with_path(parsed.path.rstrip("/")))
        return {"management_url": base, "username": username}, {"password": password}

    @classmethod
    def role_spec(cls, body: dict[str, Any], limits: Limits = Limits()) -> dict[str, Any]:
        vhosts = body.get("vhosts")
        if not vhosts:
            raise role_error('a rabbitmq role needs \'vhosts\' ({"/": {"configure": "", "write": ".*", "read": ".*"}})',
                             "vhosts")
        spec: dict[str, dict[str, str]] = {}
        for vhost, permissions in vhosts.items():
            if not _VHOST.fullmatch(vhost) or set(permissions) - set(_PERMISSIONS) \
                    or any(len(v) > 1024 or "\x00" in v for v in permissions.values()):
                raise role_error("'vhosts' maps a vhost name to {configure, write, read} regular expressions",
                                 "vhosts")
            spec[vhost] = {p: permissions.get(p, "") for p in _PERMISSIONS}
        tags = body.get("tags") or []
        if any(not isinstance(t, str) or not _TAG.fullmatch(t) for t in tags):
            raise role_error("'tags' are user tags of RabbitMQ (management, monitoring, …)", "tags")
        refused = sorted(set(tags) - limits.rabbitmq_tags)
        if refused:
            allowed = ", ".join(sorted(limits.rabbitmq_tags)) or "none"
            raise role_error(f"'tags' may hold only the tags the operator allows ({allowed}), not"
                             f" {', '.join(refused)[:120]}", "tags")
        return {"vhosts": spec, "tags": list(tags)}

    # -- the management API ------------------------------------------------------------------------

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self.reach.policy, self.reach.lookup, limit=self.reach.connections),
                timeout=aiohttp.ClientTimeout(total=self.reach.timeout))
        return self._session

    async def _call(self, method: str, path: str, *, body: Any = None, password: str | None = None,
                    ok_missing: bool = False) -> Any:
        headers = {"Authorization": aiohttp.encode_basic_auth(self.public["username"],
                                                              password or self.secret["password"])}
        if method == "DELETE":
            headers["X-Reason"] = "coffer lease revoked"
        for attempt in (1, 2):
            try:
                async with self._client().request(method, self.public["management_url"] + path, json=body,
                                                  headers=headers, allow_redirects=False) as response:
                    if response.status in (401, 403) and await _management_refusal(response):
                        raise TargetRefused("the target refused the engine's admin credentials")
                    if response.status == 404 and ok_missing:
                        return None
                    if response.status >= 500 or response.status in (401, 403):
                        raise TargetDown(f"HTTP {response.status}")
                    if response.status >= 300:
                        # the status stays in the log: the target is on the operator's private network
                        raise TargetRejected("the management API refused the request", cause=f"HTTP {response.status}")
                    if response.status == 204 or response.content_length == 0:
                        return None
                    return await response.json(content_type=None)
            except OutboundRefused:
                raise TargetRefused("the engine's address is not one the operator allows") from None
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                # a kept-alive connection the management API closed as we reused it: every call here is
                # idempotent (GET, PUT, DELETE), so once more on a fresh connection
                if attempt == 2:
                    raise TargetDown(type(exc).__name__) from None
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                raise TargetDown(type(exc).__name__) from None
        return None

    async def check(self) -> None:
        # like the other engines: an address the operator has not allowed is invalid_config, before any
        # connection (the guarded connector refuses it again at every connection)
        url = URL(self.public["management_url"])
        await self.reach.address(url.raw_host or "", url.port or 80)
        try:
            me = await self._call("GET", "/api/whoami")
        except TargetRejected as exc:
            # an HTTP server that is not a management API (its status only in the log)
            raise TargetDown(f"whoami {exc.cause}") from None
        if not isinstance(me, dict) or not isinstance(me.get("name"), str):
            raise TargetDown("whoami: not a management API answer")
        tags = me.get("tags")
        tags = tags.split(",") if isinstance(tags, str) else tags or []
        if "administrator" not in tags:
            raise TargetRefused("the engine's user needs the administrator tag (to manage users)")

    async def create_user(self, spec: dict[str, Any], username: str, password: str, expires: datetime) -> None:
        user = _segment(username)
        await self._call("PUT", f"/api/users/{user}", body={"password": password, "tags": ",".join(spec["tags"])})
        for vhost, permissions in spec["vhosts"].items():
            try:
                await self._call("PUT", f"/api/permissions/{_segment(vhost)}/{user}", body=permissions)
            except TargetRejected:
                raise TargetRejected("a vhost of the role does not exist in the target", vhost=vhost[:80]) from None

    async def _connections_of(self, username: str) -> list[str]:
        connections = await self._call("GET", "/api/connections?columns=name,user") or []
        return [str(c.get("name")) for c in connections if isinstance(c, dict) and c.get("user") == username]

    async def revoke_user(self, spec: dict[str, Any], username: str) -> None:
        user = f"/api/users/{_segment(username)}"
        try:
            await self._call("DELETE", user, ok_missing=True)
        except TargetDown:
            # the broker may answer 5xx while it force-closes the user's connections: gone is gone
            await asyncio.sleep(0.2)
            if await self._call("GET", user, ok_missing=True) is not None:
                raise
        try:
            for name in await self._connections_of(username):
                await self._call("DELETE", f"/api/connections/{_segment(name)}", ok_missing=True)
        except TargetDown:
            # RabbitMQ closes a deleted user's connections itself; one closing while we ask can make the
            # management API answer 5xx. Revoked is when none is left (else the sweeper tries again).
            for _ in range(20):
                await asyncio.sleep(0.1)
                if not await self._connections_of(username):
                    return
            raise

    async def rotate_admin(self, password: str) -> None:
        admin = _segment(self.public["username"])
        me = await self._call("GET", f"/api/users/{admin}")
        tags = me.get("tags") if isinstance(me, dict) else []
        tags = ",".join(tags) if isinstance(tags, list) else str(tags or "")
        await self._call("PUT", f"/api/users/{admin}", body={"password": password, "tags": tags})
        await self._call("GET", "/api/whoami", password=password)  # the new password works

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
