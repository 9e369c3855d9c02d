"""Break-glass recovery: ``python -m services.gateway recover-admin`` makes a new root admin.

For an operator who lost every root admin's credentials (the API refuses to
delete or de-scope the last one, but a lost client secret locks out just as
well). It needs what only an operator has: the database (``COFFER_DATABASE_URL``,
or the embedded one under ``COFFER_DATA_DIR``) and the KMS key file — the
command proves the latter by opening the installation's sealed audit key with
it, and refuses to do anything if it can't. It then creates, in one
transaction, a service identity in the root tenant with every scope and
partner admin, an allow-everything policy bound to it, and a
``system.admin_recovered`` event (through the outbox: the gateway publishes it);
writes an audit entry in the root tenant's chain; and prints the new client id
and secret once. Nothing else changes: the old identities keep what they had.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import asyncpg

from services.gateway.audit.log import AuditLog
from services.gateway.iam import domain
from services.gateway.iam.models import ROOT_POLICY_RULES
from services.gateway.settings import GatewaySettings
from shared import handover
from shared.context import new_request_id
from shared.contracts.events import Event
from shared.custody import open_for_tool
from shared.db import create_pool, outbox, sealed_keys
from shared.errors import EncryptionError


async def recover_admin(settings: GatewaySettings, name: str) -> dict[str, Any]:
    """The new root admin: ``{tenant_id, identity_id, name, client_id, client_secret}``."""
    try:  # through the installation's seal: the key file, the KMS or HSM, or unseal shares on stdin
        kms = await open_for_tool(settings)
    except EncryptionError as exc:
        raise SystemExit(f"recover-admin: {exc.message}: {settings.key_file} (COFFER_KMS_KEY_FILE)") from None
    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
    else:
        from services.embedded import embedded_database

        dsn = embedded_database(settings)
    schema = settings.schema_for("gateway")
    pool = await create_pool(dsn, schema, min_size=1, max_size=2)
    try:
        try:
            salt = await pool.fetchval("SELECT value FROM keyring WHERE name = 'salt'")
        except asyncpg.UndefinedTableError:
            salt = None
        if salt is None:
            raise SystemExit(f"recover-admin: no initialised Coffer in schema '{schema}' (POST /v1/sys/init first)")
        try:  # the gateway's own keyring: the root keyring's share and the gateway's salt
            ring = handover.open_service_keyring(kms, settings.keyrings(kms.path), "gateway", bytes(salt))
            audit_key = await sealed_keys.existing_key(pool, ring, schema, "audit")
        except EncryptionError:
            raise SystemExit("recover-admin: this KMS key file does not open the installation's keys") from None
        root = await pool.fetchval("SELECT id FROM tenants WHERE parent_id IS NULL")
        if audit_key is None or root is None:
            raise SystemExit(f"recover-admin: no initialised Coffer in schema '{schema}' (POST /v1/sys/init first)")
        secret = domain.new_client_secret()
        identity = {"id": domain.new_id("idn"), "name": name, "client_id": domain.new_id("cli")}
        request_id = new_request_id()
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval("SELECT 1 FROM identities WHERE tenant_id = $1 AND name = $2", root, name):
                raise SystemExit(f"recover-admin: the root tenant has an identity named '{name}' (--name)")
            await conn.execute(
                "INSERT INTO identities (id, tenant_id, name, kind, allowed_scopes, partner_admin, client_id,"
                " secret_hash) VALUES ($1, $2, $3, 'service', $4, true, $5, $6)",
                identity["id"], root, name, list(domain.ALL_SCOPES), identity["client_id"],
                domain.hash_client_secret(secret))
            policy_id = domain.new_id("pol")
            await conn.execute(
                "INSERT INTO policies (id, tenant_id, name, description, rules) VALUES ($1, $2, $3, $4, $5)",
                policy_id, root, f"{name}-policy", "Allows everything; made by recover-admin.", ROOT_POLICY_RULES)
            await conn.execute("INSERT INTO bindings (id, tenant_id, policy_id, identity_id) VALUES ($1, $2, $3, $4)",
                               domain.new_id("bnd"), root, policy_id, identity["id"])
            await outbox.add(conn, Event(type="system.admin_recovered", tenant_id=root, request_id=request_id,
                                         data={"identity_id": identity["id"], "name": name}), schema=schema)
        audit = AuditLog(pool, audit_key)
        try:
            await audit.record(tenant_id=root, identity_id=None, action="recover-admin (operator command)",
                               resource=f"identities/{identity['id']}", outcome="ok", status=201, client_ip=None,
                               request_id=request_id)
        finally:
            await audit.close()
        return {"tenant_id": root, "identity_id": identity["id"], "name": name,
                "client_id": identity["client_id"], "client_secret": secret}
    finally:
        await pool.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway recover-admin",
        description="Make a new root admin (every scope, partner admin, an allow-everything policy) when none "
                    "can log in. Needs the database and the keys (the key file, or the installation's seal: "
                    "its KMS or HSM, or unseal shares on standard input); prints the credentials once.")
    parser.add_argument("--name", default=None, help="the new identity's name [recovered-admin-<random>]")
    args = parser.parse_args(argv)
    name = args.name or f"recovered-admin-{domain.new_id('x')[-6:]}"
    made = asyncio.run(recover_admin(GatewaySettings(), name))
    sys.stdout.write(
        f"coffer: a new root admin '{made['name']}' ({made['identity_id']}) in tenant {made['tenant_id']}; an audit "
        "entry and a system.admin_recovered event record it.\n"
        "Its credentials, shown this once (keep them safe):\n"
        f"  client_id:     {made['client_id']}\n"
        f"  client_secret: {made['client_secret']}\n"
        "Get a token: POST /v1/auth/token {\"client_id\": …, \"client_secret\": …}\n")
