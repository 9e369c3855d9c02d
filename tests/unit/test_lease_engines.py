"""Engine configs and roles as the lease service reads them, the SCRAM verifiers it hands PostgreSQL,
and the outbound guard for engines (only what the operator allowed, nothing public)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from services.lease.engines.base import Limits
from services.lease.engines.postgresql import PostgresEngine, render, scram_verifier
from services.lease.engines.rabbitmq import RabbitEngine
from services.lease.engines.redis import RedisEngine
from shared.errors import InvalidConfig, InvalidRole
from shared.outbound import OutboundPolicy, OutboundRefused, check_host

NONE = Limits()  # the operator's defaults: no RabbitMQ tags, no Redis administration


def test_postgres_config_keeps_the_password_out_of_what_is_shown() -> None:
    public, secret = PostgresEngine.parse_config({"connection_url": "postgresql://admin:s3cr%40t@db.internal:6432/app"})
    assert secret == {"password": "s3cr@t"}
    assert public["connection_url"] == "postgresql://admin@db.internal:6432/app"
    assert public["sslmode"] == "require" and "s3cr" not in repr(public)
    public, secret = PostgresEngine.parse_config({"connection_url": "postgres://[::1]/x", "username": "a",
                                                  "password": "b", "sslmode": "disable"})
    assert public["connection_url"] == "postgresql://a@[::1]:5432/x" and secret == {"password": "b"}


@pytest.mark.parametrize("config", [
    {"connection_url": "postgresql://a:b@h/db?sslmode=disable"},  # parameters hide options
    {"connection_url": "postgresql://a@h/db"},  # no password
    {"connection_url": "http://a:b@h/db"},
    {"connection_url": "postgresql://a:b@h:99999/db"},
    {"connection_url": "postgresql://a:b@h/db", "sslmode": "allow"},
    {"connection_url": "postgresql://a:b@h/db", "ca_certificate": "not a certificate"},
    {"connection_url": "postgresql://a:b@h/db", "surprise": True},
    {"connection_url": ["postgresql://a:b@h/db"]},
])
def test_postgres_config_refuses_what_it_cannot_use(config: dict[str, object]) -> None:
    with pytest.raises(InvalidConfig) as caught:
        PostgresEngine.parse_config(config)
    assert "b@h" not in str(caught.value)


def test_postgres_roles_name_the_user_and_only_known_placeholders() -> None:
    spec = PostgresEngine.role_spec({"creation_statements": ['CREATE ROLE "{{name}}" PASSWORD \'{{ password }}\''],
                                     "revocation_statements": None}, NONE)
    assert spec["revocation_statements"] is None
    rendered = render(spec["creation_statements"][0], {"name": "v-x", "password": "p"})
    assert rendered == "CREATE ROLE \"v-x\" PASSWORD 'p'"
    for bad in ({}, {"creation_statements": []}, {"creation_statements": ["CREATE ROLE x"]},
                {"creation_statements": ['CREATE ROLE "{{name}}" {{other}}']},
                {"creation_statements": ['CREATE ROLE "{{name}}"'], "revocation_statements": ["DROP {{password}}"]},
                {"creation_statements": ['CREATE ROLE "{{name}}"' + " " * 9000]}):
        with pytest.raises(InvalidRole):
            PostgresEngine.role_spec(bad, NONE)


def test_scram_verifier_is_the_one_postgres_would_store() -> None:
    verifier = scram_verifier("pencil")
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored, server = (base64.b64decode(k) for k in keys.split(":"))
    assert method == "SCRAM-SHA-256" and iterations == "4096"
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", base64.b64decode(salt), 4096)  # RFC 5802, independently
    assert stored == hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    assert server == hmac.new(salted, b"Server Key", "sha256").digest()
    assert scram_verifier("pencil") != verifier  # a fresh salt every time


def test_redis_roles_may_not_touch_passwords_or_the_switch() -> None:
    assert RedisEngine.role_spec({"acl_rules": ["~app:*", "+@read", "-flushall"]}, NONE) == {
        "acl_rules": ["~app:*", "+@read", "-flushall"]}
    for rule in ("on", "OFF", "nopass", "resetpass", "reset", ">pw", "<pw", "#hash", "!hash", "+get x", "", "\n"):
        with pytest.raises(InvalidRole):
            RedisEngine.role_spec({"acl_rules": [rule]}, NONE)
    with pytest.raises(InvalidRole):
        RedisEngine.role_spec({"acl_rules": []}, NONE)
    public, secret = RedisEngine.parse_config({"host": "cache.internal", "password": "pw"})
    assert public == {"host": "cache.internal", "port": 6379, "username": "default", "tls": False,
                      "ca_certificate": None} and secret == {"password": "pw"}
    for bad in ({"host": "h"}, {"host": "h", "password": "p", "port": "6379"}, {"host": "h", "password": "p",
                                                                                "port": 0}):
        with pytest.raises(InvalidConfig):
            RedisEngine.parse_config(bad)


def test_rabbitmq_roles_and_config() -> None:
    spec = RabbitEngine.role_spec({"vhosts": {"/": {"read": ".*"}}, "tags": ["management"]},
                                  Limits(rabbitmq_tags=frozenset({"management"})))
    assert spec == {"vhosts": {"/": {"configure": "", "write": "", "read": ".*"}}, "tags": ["management"]}
    for bad in ({}, {"vhosts": {"/": {"admin": ".*"}}}, {"vhosts": {"/": {}}, "tags": ["Bad Tag"]},
                {"vhosts": {"\x00": {}}}):
        with pytest.raises(InvalidRole):
            RabbitEngine.role_spec(bad, NONE)
    public, secret = RabbitEngine.parse_config({"management_url": "http://mq.internal:15672/", "username": "a",
                                                "password": "b"})
    assert public == {"management_url": "http://mq.internal:15672", "username": "a"} and secret == {"password": "b"}
    for url in ("http://a:b@mq:15672", "ftp://mq", "http://mq:15672/?x=1", "http://mq:22"):
        with pytest.raises(InvalidConfig):
            RabbitEngine.parse_config({"management_url": url, "username": "a", "password": "b"})


async def test_engines_reach_only_the_ranges_the_operator_named() -> None:
    policy = OutboundPolicy.from_cidrs(("10.0.0.0/8",), True, public=False)

    async def resolves_to(*addresses: str):  # noqa: ANN202
        async def lookup(host: str, port: int) -> list[str]:
            return list(addresses)
        return lookup

    assert await check_host("db", 5432, policy, await resolves_to("10.1.2.3")) == "10.1.2.3"
    for addresses in (("8.8.8.8",), ("127.0.0.1",), ("10.1.2.3", "192.168.0.1"), ("::ffff:10.1.2.3",), ()):
        with pytest.raises(OutboundRefused):
            await check_host("db", 5432, policy, await resolves_to(*addresses))
    for host, port in (("db/x", 5432), ("", 5432), ("db", 22), ("db", True), (None, 5432)):
        with pytest.raises(OutboundRefused):
            await check_host(host, port, policy, await resolves_to("10.1.2.3"))
    assert OutboundPolicy().permits("8.8.8.8") and not OutboundPolicy(public=False).permits("8.8.8.8")


@pytest.mark.parametrize("rule", [
    "+@all", "+@ALL", "allcommands", "AllCommands", "+@admin", "+@Dangerous", "+acl", "+ACL|LIST", "+acl|setuser",
    "+config", "+CONFIG|get", "+config|set", "+module", "+module|load", "+debug", "+client", "+client|kill",
    "+keys", "+flushall", "+shutdown", "+replicaof", "+migrate", "(+@all)", "(~*", "clearselectors", "+acl|",
    "+debug|sleep", "+Module|LoadEx",
])
def test_redis_roles_may_not_grant_administration_in_any_spelling(rule: str) -> None:
    with pytest.raises(InvalidRole) as caught:
        RedisEngine.role_spec({"acl_rules": ["~*", rule]}, NONE)
    assert caught.value.details == {"field": "acl_rules"}


def test_redis_administration_the_operator_allows_and_what_every_user_ends_with() -> None:
    from services.lease.engines.redis import regrants, target_denials
    for rule in ("+@read", "+@slow", "+get", "-@all", "-config", "+client|setname", "%R~app:*", "&*", "nocommands"):
        RedisEngine.role_spec({"acl_rules": [rule]}, NONE)  # ordinary rules (what +@slow overlaps is taken away)
    assert target_denials(frozenset()) == ["-@admin", "-@dangerous"]
    dangerous = Limits(redis_allow=frozenset({"@dangerous"}))
    RedisEngine.role_spec({"acl_rules": ["+keys", "+@dangerous", "+flushall"]}, dangerous)
    with pytest.raises(InvalidRole):
        RedisEngine.role_spec({"acl_rules": ["+config|get"]}, dangerous)  # @admin too
    assert target_denials(dangerous.redis_allow) == ["-@admin"]
    config = Limits(redis_allow=frozenset({"config"}))
    RedisEngine.role_spec({"acl_rules": ["+CONFIG|GET"]}, config)
    with pytest.raises(InvalidRole):
        RedisEngine.role_spec({"acl_rules": ["+acl|list"]}, config)
    assert regrants(["+CONFIG|GET", "+get", "+@read"], config.redis_allow) == ["+CONFIG|GET"]
    RedisEngine.role_spec({"acl_rules": ["+@all"]}, Limits(redis_allow=frozenset({"@all"})))
    assert target_denials(frozenset({"@all"})) == []


def test_rabbitmq_tags_only_from_the_operators_list() -> None:
    for tags in (["administrator"], ["management"], ["policymaker", "monitoring"]):
        with pytest.raises(InvalidRole) as caught:
            RabbitEngine.role_spec({"vhosts": {"/": {}}, "tags": tags}, NONE)
        assert caught.value.details == {"field": "tags"}
    monitoring = Limits(rabbitmq_tags=frozenset({"monitoring", "management"}))
    assert RabbitEngine.role_spec({"vhosts": {"/": {}}, "tags": ["monitoring"]}, monitoring)["tags"] == ["monitoring"]
    with pytest.raises(InvalidRole):
        RabbitEngine.role_spec({"vhosts": {"/": {}}, "tags": ["monitoring", "administrator"]}, monitoring)


def test_the_operators_engine_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.lease.settings import LeaseSettings
    assert LeaseSettings().engine_limits() == Limits()  # nothing by default
    monkeypatch.setenv("COFFER_ENGINE_RABBITMQ_TAGS", "management, monitoring")
    monkeypatch.setenv("COFFER_ENGINE_REDIS_ALLOW", "@Dangerous,config")
    limits = LeaseSettings().engine_limits()
    assert limits.rabbitmq_tags == {"management", "monitoring"} and limits.redis_allow == {"@dangerous", "config"}
    for name, value in (("COFFER_ENGINE_RABBITMQ_TAGS", "Admin Istrator"), ("COFFER_ENGINE_REDIS_ALLOW", "+@all")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ValueError):
            LeaseSettings()
        monkeypatch.delenv(name)
