"""docker-compose's broker definitions, PostgreSQL roles and per-container credentials match the code.

The compose files can't be run on this machine (no Docker engine), so they are
checked here: generated from services.provision, each container given only its
own service's credentials, every hash and verifier made from its password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import yaml
from yarl import URL

from services.provision import DEV_PASSWORDS, definitions, pg_role
from shared.registry import SERVICES

ROOT = Path(__file__).resolve().parents[2]
STALE = "run `python -m services.provision --compose deploy`"


def _rabbit_hash_ok(stored: str, password: str) -> bool:
    raw = base64.b64decode(stored)
    return hmac.compare_digest(raw[4:], hashlib.sha256(raw[:4] + password.encode()).digest())


def _scram_ok(verifier: str, password: str) -> bool:
    iterations, salt, stored, server = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier).groups()
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return (base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored
            and base64.b64encode(hmac.new(salted, b"Server Key", hashlib.sha256).digest()).decode() == server)


def test_broker_definitions_are_the_provisioned_ones() -> None:
    committed = json.loads((ROOT / "deploy" / "rabbitmq" / "definitions.json").read_text())
    expected = definitions("/", DEV_PASSWORDS, "")
    for key in ("vhosts", "exchanges", "topic_permissions"):
        assert committed[key] == expected[key], STALE
    assert committed["permissions"][:len(SERVICES)] == expected["permissions"], STALE
    users = {u["name"]: u for u in committed["users"]}
    for service in SERVICES:
        assert _rabbit_hash_ok(users[f"coffer-{service}"]["password_hash"], DEV_PASSWORDS[service]), STALE
        assert users[f"coffer-{service}"]["tags"] == []  # no service is a broker administrator
    assert users["operator"]["tags"] == ["administrator"]


def test_postgres_roles_own_their_schema_with_their_password() -> None:
    sql = (ROOT / "deploy" / "postgres" / "10-roles.sql").read_text()
    for service in SERVICES:
        role = pg_role("", service)
        verifier = re.search(rf"CREATE ROLE {role} LOGIN PASSWORD '([^']+)';", sql)
        assert verifier and _scram_ok(verifier.group(1), DEV_PASSWORDS[service]), STALE
        assert f"CREATE SCHEMA {service} AUTHORIZATION {role};" in sql
    assert "coffer-dev-only" not in sql  # verifiers, never the passwords themselves


def test_each_container_holds_only_its_own_credentials() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    bus_users = ",".join(f"{s}=coffer-{s}" for s in SERVICES)
    for service in SERVICES:
        env = compose[service]["environment"]
        amqp, pg = URL(env["COFFER_AMQP_URL"]), URL(env["COFFER_DATABASE_URL"])
        assert (amqp.user, amqp.password) == (f"coffer-{service}", DEV_PASSWORDS[service])
        assert (pg.user, pg.password) == (pg_role("", service), DEV_PASSWORDS[service])
        assert env["COFFER_BUS_USERS"] == bus_users
        others = [p for s, p in DEV_PASSWORDS.items() if s != service] + ["operator-dev-only"]
        assert not any(p in json.dumps(env) for p in others)
