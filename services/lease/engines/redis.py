"""The ``redis`` engine: ACL users (Redis 6+).

Config ``{host, port?, username?, password, tls?, ca_certificate?}``: an ACL
user allowed ``ACL`` and ``CLIENT KILL``. A role is ``acl_rules`` — key
patterns, command categories, commands (``~app:*``, ``+@read``, ``-flushall``)
— passed to ``ACL SETUSER`` as separate arguments, never spliced into a
command; rules that touch passwords or switch the user on or off are the
engine's alone. Revocation: ``ACL SETUSER … off`` (no new logins), ``CLIENT
KILL USER`` (its connections), ``ACL DELUSER``.

A rotated admin password is saved with ``ACL SAVE`` when the server keeps an
ACL file; a server whose users live in ``redis.conf`` forgets it on restart
(the operator's configuration wins then, as it would for any ACL change).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import BlockingConnectionPool, SSLConnection
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.lease.engines.base import (
    Engine,
    TargetDown,
    TargetRefused,
    TargetRejected,
    field_of,
    only_fields,
    role_error,
)
from shared.errors import InvalidConfig

#: rules a role may not hold: passwords and the user's on/off switch are the engine's
_RESERVED = {"on", "off", "nopass", "resetpass", "reset"}
_RULE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")


def _refusal(exc: Exception) -> bool:
    text = str(exc).upper()
    return isinstance(exc, rx.AuthenticationError | rx.AuthenticationWrongNumberOfArgsError | rx.NoPermissionError) \
        or text.startswith(("WRONGPASS", "NOPERM", "NOAUTH"))


class RedisEngine(Engine):
    type = "redis"
    role_fields = ("acl_rules",)

    def __init__(self, public: dict[str, Any], secret: dict[str, Any], reach: Any) -> None:
        super().__init__(public, secret, reach)
        self._client: aioredis.Redis | None = None

    @classmethod
    def parse_config(cls, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        only_fields(raw, ("host", "port", "username", "password", "tls", "ca_certificate"))
        host = field_of(raw, "host", str, max_length=253)
        port = field_of(raw, "port", int, required=False, default=6379)
        username = field_of(raw, "username", str, required=False, default="default", max_length=200)
        password = field_of(raw, "password", str, max_length=1000)
        tls = field_of(raw, "tls", bool, required=False, default=False)
        ca = field_of(raw, "ca_certificate", str, required=False, max_length=64_000)
        if not 1 <= port <= 65535 or not _RULE.fullmatch(username) or not password:
            raise InvalidConfig("config.port, config.username or config.password is not one Redis accepts",
                                details={"field": "config"})
        public = {"host": host, "port": port, "username": username, "tls": tls, "ca_certificate": ca}
        return public, {"password": password}

    @classmethod
    def role_spec(cls, body: dict[str, Any]) -> dict[str, Any]:
        rules = body.get("acl_rules")
        if not rules:
            raise role_error("a redis role needs 'acl_rules' (for example [\"~app:*\", \"+@read\"])", "acl_rules")
        for rule in rules:
            if not _RULE.fullmatch(rule) or rule.lower() in _RESERVED or rule[0] in "<>#!":
                raise role_error("'acl_rules' holds a rule a role may not set (passwords, on/off, reset, spaces)",
                                 "acl_rules")
        return {"acl_rules": list(rules)}

    async def _new_client(self, password: str) -> aioredis.Redis:
        host, port = self.public["host"], self.public["port"]
        address = await self.reach.address(host, port)
        tls = bool(self.public["tls"])
        extra: dict[str, Any] = {"connection_class": SSLConnection,
                                 "ssl_ca_data": self.public.get("ca_certificate")} if tls else {}
        # callers wait for a free connection (at most ``connections`` open) rather than fail
        pool = BlockingConnectionPool(
            max_connections=self.reach.connections, timeout=self.reach.timeout,
            host=host if tls else address, port=port, username=self.public["username"], password=password,
            socket_timeout=self.reach.timeout, socket_connect_timeout=self.reach.timeout,
            retry=Retry(NoBackoff(), 0), decode_responses=True, client_name="coffer-lease", **extra)
        return aioredis.Redis(connection_pool=pool)

    async def _run(self, work: Any, client: aioredis.Redis | None = None) -> Any:
        try:
            if client is None:
                if self._client is None:
                    self._client = await self._new_client(self.secret["password"])
                client = self._client
            return await work(client)
        except (TargetRejected, TargetRefused):
            raise
        except rx.RedisError as exc:
            if _refusal(exc):
                raise TargetRefused("the target refused the engine's admin credentials or a command") from None
            if isinstance(exc, rx.ConnectionError | rx.TimeoutError):
                raise TargetDown(type(exc).__name__) from None
            raise TargetRejected("the target refused the ACL change") from None
        except (OSError, TimeoutError) as exc:
            raise TargetDown(type(exc).__name__) from None

    async def check(self) -> None:
        async def can_manage_users(client: aioredis.Redis) -> None:
            me = await client.execute_command("ACL", "WHOAMI")
            for command in (("ACL", "SETUSER", "coffer-probe"), ("CLIENT", "KILL", "USER", "coffer-probe")):
                try:
                    answer = await client.execute_command("ACL", "DRYRUN", me, *command)
                except rx.ResponseError as exc:
                    if "unknown subcommand" in str(exc).lower():
                        return  # Redis 6 has no DRYRUN: the first lease tells
                    raise
                if answer != "OK":
                    raise TargetRefused("the engine's admin may not run ACL SETUSER and CLIENT KILL")
        await self._run(can_manage_users)

    async def create_user(self, spec: dict[str, Any], username: str, password: str, expires: datetime) -> None:
        async def create(client: aioredis.Redis) -> None:
            await client.execute_command("ACL", "SETUSER", username, "reset", "on", f">{password}",
                                         *spec["acl_rules"])
        await self._run(create)

    async def revoke_user(self, spec: dict[str, Any], username: str) -> None:
        async def revoke(client: aioredis.Redis) -> None:
            if await client.execute_command("ACL", "GETUSER", username) is None:
                return
            await client.execute_command("ACL", "SETUSER", username, "off")  # no new logins
            await client.execute_command("CLIENT", "KILL", "USER", username)
            await client.execute_command("ACL", "DELUSER", username)
        await self._run(revoke)

    async def rotate_admin(self, password: str) -> None:
        async def rotate(client: aioredis.Redis) -> None:
            await client.execute_command("ACL", "SETUSER", self.public["username"], "resetpass", f">{password}")
            try:
                await client.execute_command("ACL", "SAVE")
            except rx.ResponseError:
                pass  # no ACL file: users live in redis.conf (see the module's note)
        await self._run(rotate)
        fresh = await self._new_client(password)  # the new password works before anything forgets the old
        try:
            await self._run(lambda c: c.ping(), fresh)
        finally:
            await fresh.aclose(close_connection_pool=True)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose(close_connection_pool=True)
