"""``sys/*`` on the Vault listener (api.md §13): health, seal status, and the KV mount as Vault lists mounts.

``sys/health`` answers Vault's body and status codes from the same checks as the main API's health (every
service pinged over the bus): 200 when Coffer is initialised and every service answers, 501 before
``sys/init``, 503 when a service does not answer (with Coffer's envelope beside the body, as the main
health has); ``activecode`` / ``uninitcode`` / ``sealedcode`` choose other codes, as Vault's do. This
process is never a standby. A sealed process has no Vault listener (the sealed gateway answers on the main
address only). ``sys/mounts`` and ``sys/internal/ui/mounts/<path>`` describe the one KV v2 mount, which is
what the vault CLI and the libraries ask before they read or write it.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from pydantic import Field

from services.gateway.bootstrap import VERSION
from services.gateway.edge.routes import Route, context, json_response, query
from services.gateway.state import state
from services.gateway.system import routes as system_routes
from services.gateway.system import seal as seal_control
from services.gateway.vault.answers import answer
from shared.contracts import Query
from shared.errors import InvalidRequest, ServiceUnavailable

CLUSTER = "coffer"


class HealthQuery(Query):
    """Vault's health parameters: the status code of each state (a standby never answers here). A final status
    only: an anonymous ``?activecode=101`` would otherwise answer "switching protocols", which a proxy in front
    may take as the connection no longer being HTTP."""

    activecode: int = Field(200, ge=200, le=599)
    uninitcode: int = Field(501, ge=200, le=599)
    sealedcode: int = Field(503, ge=200, le=599)
    standbyok: bool = False
    perfstandbyok: bool = False


async def health(request: web.Request) -> web.Response:
    asked = query(request, HealthQuery)
    st = state(request)
    initialised = await st.tenancy.root_tenant_id() is not None
    services = await system_routes.service_states(request)
    down = sorted(name for name, status in services.items() if status != "ok")
    body: dict[str, Any] = {
        "initialized": initialised, "sealed": False, "standby": False, "performance_standby": False,
        "replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
        "server_time_utc": int(time.time()), "version": VERSION, "cluster_name": CLUSTER, "cluster_id": ""}
    status = asked.activecode if initialised else asked.uninitcode
    if down:
        error = ServiceUnavailable("some services are unavailable", details={"unavailable": down})
        body["error"] = {**error.to_wire(), "request_id": context(request).request_id}
        status = asked.sealedcode
    if request.method == "HEAD" or status in (204, 304):  # statuses that carry no body
        return web.Response(status=status)
    return json_response(body, status=status)


async def seal_status(request: web.Request) -> web.Response:
    """Vault's seal status from the seal's own (api.md §11): this process answers, so it is unsealed."""
    seal = seal_control.status(state(request).settings)
    threshold = seal.get("threshold") or 0
    return json_response({
        "type": seal["type"], "initialized": bool(seal.get("initialized", True)), "sealed": bool(seal["sealed"]),
        "t": threshold, "n": seal.get("shares") or threshold, "progress": seal.get("progress", 0), "nonce": "",
        "version": VERSION, "build_date": "", "migration": False, "cluster_name": CLUSTER, "cluster_id": "",
        "recovery_seal": False, "storage_type": "postgresql", "unseal_recovery_enabled": False})


def kv_mount(mount: str) -> dict[str, Any]:
    """The KV v2 mount as an entry of ``sys/mounts``."""
    return {"accessor": f"kv_{mount}", "config": {"default_lease_ttl": 0, "force_no_cache": False,
                                                   "max_lease_ttl": 0},
            "description": "Coffer's secrets (KV v2)", "external_entropy_access": False, "local": False,
            "options": {"version": "2"}, "seal_wrap": False, "type": "kv", "uuid": ""}


async def mounts(request: web.Request) -> web.Response:
    mount = state(request).settings.vault_kv_mount
    return answer(request, data={f"{mount}/": kv_mount(mount)})


async def ui_mount(request: web.Request) -> web.Response:
    """The mount a path is under (the vault CLI's question before ``vault kv``): the KV mount, or none."""
    mount = state(request).settings.vault_kv_mount
    path = request.match_info["path"]
    if path != mount and not path.startswith(mount + "/"):
        raise InvalidRequest(f"no mount serves that path: the KV v2 mount is '{mount}/'",
                             details={"mount": f"{mount}/"})
    return answer(request, data={**kv_mount(mount), "path": f"{mount}/"})


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/sys/health", health, public=True, query=HealthQuery, statuses=(200, 501)),
    Route("HEAD", "/v1/sys/health", health, public=True, query=HealthQuery, statuses=(200, 501)),
    Route("GET", "/v1/sys/seal-status", seal_status, public=True),
    Route("GET", "/v1/sys/mounts", mounts),
    Route("GET", r"/v1/sys/internal/ui/mounts/{path:[\s\S]+}", ui_mount, errors=("invalid_request",)),
)
