"""What a backup copies, read from PostgreSQL's catalog: every table of every Coffer schema, in an order
that loads (parents before children), their columns, their sequences, and the counts a manifest holds.

Backup and verification count with the same queries (``counts``), so "counts match the manifest" compares
like with like. Identifiers come from the catalog and are always quoted.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass
from typing import Any

from services.admin.bundle import BackupRefused
from shared.config import Settings
from shared.registry import SERVICES

#: each schema's record of its migrations: made by ``shared.db.migrate``, never copied
MIGRATIONS_TABLE = "schema_migrations"


def rows(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def quote(*names: str) -> str:
    return ".".join('"' + n.replace('"', '""') + '"' for n in names)


@dataclass(frozen=True)
class Table:
    service: str
    schema: str
    name: str
    columns: tuple[str, ...]
    tenant_column: bool

    @property
    def key(self) -> str:
        """``<service>.<table>``: how manifests name a table, whatever the schema prefix."""
        return f"{self.service}.{self.name}"

    @property
    def sql(self) -> str:
        return quote(self.schema, self.name)


def schemas(settings: Settings) -> dict[str, str]:
    """service → its schema, for the services this installation has."""
    return {service: settings.schema_for(service) for service in SERVICES}


async def existing_schemas(conn: Any, settings: Settings) -> dict[str, str]:
    names = schemas(settings)
    found = {r["nspname"] for r in await conn.fetch(
        "SELECT nspname FROM pg_namespace WHERE nspname = ANY($1::text[])", list(names.values()))}
    return {service: schema for service, schema in names.items() if schema in found}


async def tables(conn: Any, settings: Settings) -> list[Table]:
    """Every table of the installation's schemas (but the migrations' record), parents before children."""
    by_schema = {schema: service for service, schema in (await existing_schemas(conn, settings)).items()}
    listed = await conn.fetch(
        "SELECT c.oid, n.nspname, c.relname,"
        " array(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
        "       AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum) AS columns"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = ANY($1::text[]) AND c.relkind = 'r' AND c.relname <> $2",
        list(by_schema), MIGRATIONS_TABLE)
    found = {r["oid"]: Table(by_schema[r["nspname"]], r["nspname"], r["relname"], tuple(r["columns"]),
                             "tenant_id" in r["columns"]) for r in listed}
    parents: dict[int, set[int]] = {oid: set() for oid in found}
    for fk in await conn.fetch("SELECT conrelid, confrelid FROM pg_constraint WHERE contype = 'f'"
                               " AND conrelid = ANY($1::oid[])", list(found)):
        if fk["confrelid"] != fk["conrelid"] and fk["confrelid"] in found:  # a row may name its own table's rows
            parents[fk["conrelid"]].add(fk["confrelid"])
    try:
        ordered = list(graphlib.TopologicalSorter(parents).static_order())
    except graphlib.CycleError:
        raise BackupRefused("the schemas' foreign keys form a cycle: no load order exists") from None
    # parents first; among tables of one depth a stable order (service, name): two backups compare line by line
    depth: dict[int, int] = {}
    for oid in ordered:
        depth[oid] = 1 + max((depth[p] for p in parents[oid]), default=-1)
    return [found[o] for o in sorted(found, key=lambda o: (depth[o], SERVICES.index(found[o].service),
                                                           found[o].name))]


async def sequences(conn: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    """``<service>.<sequence>`` → ``{"last_value", "is_called"}``: what makes a bigserial go on after a restore.

    Sequences are outside transactions: read inside the backup's snapshot they give today's value, at
    least the snapshot's (a restored sequence may skip numbers, never repeat one).
    """
    by_schema = {schema: service for service, schema in (await existing_schemas(conn, settings)).items()}
    found: dict[str, dict[str, Any]] = {}
    for row in await conn.fetch("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n"
                                " ON n.oid = c.relnamespace WHERE n.nspname = ANY($1::text[]) AND c.relkind = 'S'"
                                " ORDER BY 1, 2", list(by_schema)):
        value = await conn.fetchrow(f"SELECT last_value, is_called FROM {quote(row['nspname'], row['relname'])}")
        found[f"{by_schema[row['nspname']]}.{row['relname']}"] = {"last_value": value["last_value"],
                                                                  "is_called": value["is_called"]}
    return found


async def migrations(conn: Any, settings: Settings) -> dict[str, list[str]]:
    """service → the migrations its schema has had (``shared.db.migrate``'s record)."""
    done: dict[str, list[str]] = {}
    for service, schema in (await existing_schemas(conn, settings)).items():
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", quote(schema, MIGRATIONS_TABLE)):
            done[service] = [r["version"] for r in await conn.fetch(
                f"SELECT version FROM {quote(schema, MIGRATIONS_TABLE)} ORDER BY version")]
    return done


async def counts(conn: Any, found: list[Table]) -> dict[str, dict[str, Any]]:
    """``<service>.<table>`` → ``{"rows": n, "tenants": {tenant id: n}}`` (``tenants`` for tables that have them)."""
    out: dict[str, dict[str, Any]] = {}
    for table in found:
        entry: dict[str, Any] = {"rows": int(await conn.fetchval(f"SELECT count(*) FROM {table.sql}"))}
        if table.tenant_column:
            entry["tenants"] = {r["tenant_id"]: int(r["n"]) for r in await conn.fetch(
                f"SELECT tenant_id, count(*) AS n FROM {table.sql} GROUP BY tenant_id ORDER BY tenant_id")}
        out[table.key] = entry
    return out


async def audit_heads(conn: Any, settings: Settings) -> dict[str, dict[str, Any]]:
    """tenant → the head of its audit chain: ``{"seq", "hash" (hex), "entries"}``."""
    log = quote(settings.schema_for("gateway"), "audit_log")
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", log):
        return {}
    rows = await conn.fetch(
        f"SELECT DISTINCT ON (tenant_id) tenant_id, seq, hash, count(*) OVER (PARTITION BY tenant_id) AS entries"
        f" FROM {log} ORDER BY tenant_id, seq DESC")
    return {r["tenant_id"]: {"seq": r["seq"], "hash": bytes(r["hash"]).hex(), "entries": r["entries"]} for r in rows}


async def installation(conn: Any, settings: Settings) -> dict[str, Any]:
    """Who this installation is (its root tenant's id) and its tenants' ids."""
    tenants = quote(settings.schema_for("gateway"), "tenants")
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", tenants):
        return {"root_tenant": None, "tenants": []}
    rows = await conn.fetch(f"SELECT id, parent_id FROM {tenants} ORDER BY id")
    return {"root_tenant": next((r["id"] for r in rows if r["parent_id"] is None), None),
            "tenants": [r["id"] for r in rows]}


async def salts(conn: Any, settings: Settings) -> dict[str, bytes]:
    """service → S_s, its keyring salt (shared/keyring.py), for the services that have one."""
    found = {}
    for service, schema in (await existing_schemas(conn, settings)).items():
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", quote(schema, "keyring")):
            salt = await conn.fetchval(f"SELECT value FROM {quote(schema, 'keyring')} WHERE name = 'salt'")
            if salt is not None:
                found[service] = bytes(salt)
    return found
