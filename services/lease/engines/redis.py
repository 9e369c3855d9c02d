"""The ``redis`` engine: ACL users (Redis 6+).

Config ``{host, port?, username?, password, tls?, ca_certificate?}``: an ACL
user allowed ``ACL`` and ``CLIENT KILL``. A role is ``acl_rules`` — key
patterns, command categories, commands (``~app:*``, ``+@read``, ``-flushall``)
— passed to ``ACL SETUSER`` as separate arguments, never spliced into a
command; rules that touch passwords or switch the user on or off are the
engine's alone, and so are selectors (``(…)``, rules within rules).

A role may not grant the ``@admin`` or ``@dangerous`` categories (nor
``@all``/``allcommands``, which hold them), nor a command of theirs —
``acl``, ``config``, ``module``, ``debug``, ``client|kill``, ``keys``… in
any case, whole or as a subcommand — unless the operator allows it in
``COFFER_ENGINE_REDIS_ALLOW`` (``@dangerous``, ``config``…): a leased user
with ``ACL LIST`` reads every user's password hash, with ``CONFIG SET`` it
owns the server. That is refused at the role, checked again at every lease,
and held in the target too: every leased user's rules end with
``-@admin -@dangerous`` (what the operator has not allowed), so a category
that merely overlaps them (``+@slow``, ``+@read`` holds ``keys``) grants
none of their commands. Revocation: ``ACL SETUSER … off`` (no new logins), ``CLIENT
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
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

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

#: rules a role may not hold: passwords and the user's on/off switch are the engine's
_RESERVED = {"on", "off", "nopass", "resetpass", "reset"}
_RULE = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")

#: the categories a role may not grant unless the operator allows them (``@all`` holds both)
DENIED_CATEGORIES = ("admin", "dangerous")
#: the commands of ``@admin`` (Redis 7.0's ``COMMAND LIST FILTERBY ACLCAT admin``), subcommands as ``cmd|sub``;
#: acl, config, module and debug are named whatever a future Redis files them under
ADMIN_COMMANDS = frozenset("""
    acl acl|deluser acl|dryrun acl|getuser acl|list acl|load acl|log acl|save acl|setuser acl|users
    bgrewriteaof bgsave client|kill client|list client|no-evict client|pause client|unblock client|unpause
    cluster|addslots cluster|addslotsrange cluster|bumpepoch cluster|count-failure-reports cluster|delslots
    cluster|delslotsrange cluster|failover cluster|flushslots cluster|forget cluster|meet cluster|replicas
    cluster|replicate cluster|reset cluster|saveconfig cluster|set-config-epoch cluster|setslot cluster|slaves
    config config|get config|resetstat config|rewrite config|set debug failover lastsave latency|doctor
    latency|graph latency|histogram latency|history latency|latest latency|reset module module|list
    module|load module|loadex module|unload monitor pfdebug pfselftest psync replconf replicaof role save
    shutdown slaveof slowlog|get slowlog|len slowlog|reset sync
""".split())
#: the commands of ``@dangerous`` beyond ``@admin``'s (Redis 7.0)
DANGEROUS_COMMANDS = ADMIN_COMMANDS | frozenset(
    "flushall flushdb info keys migrate restore restore-asking sort sort_ro swapdb".split())


def _categories_of(command: str) -> tuple[str, ...]:
    """The denied categories granting ``command`` (``cmd`` or ``cmd|sub``) would grant some of."""
    def holds(commands: frozenset[str]) -> bool:
        # the command, one of its subcommands, or a subcommand (any spelling: "acl|") of a command held whole
        return command in commands or command.split("|", 1)[0] in commands \
            or any(c.startswith(command + "|") for c in commands)
    return tuple(c for c, commands in (("admin", ADMIN_COMMANDS), ("dangerous", DANGEROUS_COMMANDS))
                 if holds(commands))


def _allowed(allow: frozenset[str], category: str) -> bool:
    return f"@{category}" in allow or "@all" in allow


def refused_grant(rule: str, allow: frozenset[str]) -> str | None:
    """What ``rule`` grants that the operator has not allowed (``None``: nothing), in any spelling."""
    text = rule.lower()
    if text == "allcommands" or text == "+@all":
        return None if all(_allowed(allow, c) for c in DENIED_CATEGORIES) else "every command (@all)"
    if text.startswith("+@"):
        category = text[2:]
        return None if category not in DENIED_CATEGORIES or _allowed(allow, category) else f"@{category}"
    if text.startswith("+"):
        command = text[1:]
        if command in allow or command.split("|", 1)[0] in allow:
            return None
        if any(not _allowed(allow, c) for c in _categories_of(command)):
            return command
    return None


def target_denials(allow: frozenset[str]) -> list[str]:
    """The rules every leased user ends with: what the operator has not allowed taken away again."""
    return [f"-@{c}" for c in DENIED_CATEGORIES if not _allowed(allow, c)]


def regrants(rules: list[str], allow: frozenset[str]) -> list[str]:
    """A role's grants of commands the operator allowed by name, given again after ``target_denials``."""
    return [r for r in rules if r.startswith("+") and not r.startswith("+@")
            and (r[1:].lower() in allow or r[1:].lower().split("|", 1)[0] in allow)]


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
    def role_spec(cls, body: dict[str, Any], limits: Limits = Limits()) -> dict[str, Any]:
        rules = body.get("acl_rules")
        if not rules:
            raise role_error("a redis role needs 'acl_rules' (for example [\"~app:*\", \"+@read\"])", "acl_rules")
        for rule in rules:
            if not isinstance(rule, str) or not _RULE.fullmatch(rule) or rule.lower() in _RESERVED \
                    or rule[0] in "<>#!(" or rule.lower() == "clearselectors":
                raise role_error("'acl_rules' holds a rule a role may not set (passwords, on/off, reset, selectors,"
                                 " spaces)", "acl_rules")
            refused = refused_grant(rule, limits.redis_allow)
            if refused is not None:
                raise role_error(f"'acl_rules' grants {refused[:60]}: administration the operator does not allow"
                                 " (COFFER_ENGINE_REDIS_ALLOW)", "acl_rules")
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
            if not isinstance(exc, rx.ResponseError):
                # nothing there, a silent port, or a server that does not speak Redis (InvalidResponse): alike
                raise TargetDown(type(exc).__name__) from None
            raise TargetRejected("the target refused the ACL change") from None
        except (OSError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
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
            allow = self.reach.limits.redis_allow
            rules = spec["acl_rules"]
            await client.execute_command("ACL", "SETUSER", username, "reset", "on", f">{password}", *rules,
                                         *target_denials(allow), *regrants(rules, allow))
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
