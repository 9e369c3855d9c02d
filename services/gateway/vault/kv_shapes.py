"""How a Coffer secret looks as a KV v2 entry, and back (pure functions: no I/O).

A ``json`` secret's object value is the KV map; any other secret's string value is ``{"value": "…"}``. A
write of ``{"value": "<string>"}`` alone keeps a string secret a string of its type (a ``password`` stays a
``password``; a new one is ``generic``), so a value round-trips between the two APIs; any other map is a
``json`` secret. A version's ``metadata`` (Coffer's, ``str → str``) is KV's ``custom_metadata``: a KV write
carries the current version's on to the new one, as Vault keeps a key's custom metadata across versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from services.gateway.vault.answers import moment
from shared.contracts.secrets import SecretMeta

JSON = "json"


def kv_map(secret_type: str, value: Any) -> dict[str, Any]:
    """A secret's value as the KV map."""
    if secret_type == JSON and isinstance(value, dict):
        return value
    return {"value": value}


def from_kv(data: dict[str, Any], current_type: str | None) -> tuple[str, Any]:
    """``(secret_type, value)`` of a KV map written over a secret of ``current_type`` (``None``: a new one)."""
    if current_type != JSON and set(data) == {"value"} and isinstance(data["value"], str):
        return current_type or "generic", data["value"]
    return JSON, data


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch of ``target`` by ``patch`` (a new object; the inputs are left as they are)."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def version_metadata(meta: SecretMeta) -> dict[str, Any]:
    """The ``metadata`` of a KV read or write answer: the version's own."""
    return {"created_time": moment(meta.version_created_at or meta.created_at),
            "custom_metadata": dict(meta.metadata) or None,
            "deletion_time": moment(meta.version_deleted_at), "destroyed": meta.version_destroyed,
            "version": meta.version}


def gone_version(details: Mapping[str, Any]) -> dict[str, Any]:
    """The ``metadata`` Vault answers beside a deleted or destroyed version's 404 (from the error's details)."""
    return {"created_time": details.get("version_created_at") or "",
            "custom_metadata": details.get("metadata") or None,
            "deletion_time": details.get("version_deleted_at") or "",
            "destroyed": bool(details.get("destroyed")), "version": details.get("version")}


def key_metadata(versions: list[SecretMeta], complete: bool) -> dict[str, Any]:
    """``metadata/<path>``'s answer from a secret's versions, newest first (``complete``: all of them)."""
    newest, oldest = versions[0], versions[-1]
    return {
        "cas_required": False, "created_time": moment(oldest.version_created_at or oldest.created_at),
        "current_version": newest.version, "custom_metadata": dict(newest.metadata) or None,
        "delete_version_after": "0s", "max_versions": 0, "oldest_version": 0 if complete else oldest.version,
        "updated_time": moment(newest.version_created_at or newest.updated_at),
        "versions": {str(v.version): {"created_time": moment(v.version_created_at or v.created_at),
                                      "deletion_time": moment(v.version_deleted_at), "destroyed": v.version_destroyed}
                     for v in reversed(versions)},
    }


def folder_keys(prefix: str, paths: Iterable[str]) -> list[str]:
    """The keys a ``LIST`` of the folder ``prefix`` shows: each path's next segment below it, a folder
    (``name/``) when the path goes deeper; sorted, each once."""
    keys: set[str] = set()
    for path in paths:
        if not path.startswith(prefix) or path == prefix:
            continue
        head, slash, _ = path[len(prefix):].partition("/")
        keys.add(head + slash)
    return sorted(keys)
