"""The gateway's HTTP handlers for system and auth (api.md §2–3).

Thin: parse a model, call the domain / repository / bus, answer a dict.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from services.gateway import domain
from services.gateway.domain import InitRequest
from services.gateway.http import SIGNER, Route, context, json_response, principal, read_model
from services.gateway.iam_repository import IamRepository
from services.gateway.repository import GatewayRepository
from shared.bus import Bus
from shared.crypto import LocalKms
from shared.errors import (
    CofferError,
    NameConflict,
    ServiceUnavailable,
    TokenInvalid,
)
from shared.metrics import OUTBOX_BACKLOG
from shared.metrics import render as render_metrics
from shared.registry import SERVICES, rpc_name

REPO = web.AppKey("repo", GatewayRepository)
IAM_REPO = web.AppKey("iam_repo", IamRepository)
BUS = web.AppKey("bus", Bus)
HEALTH_TIMEOUT = web.AppKey("health_timeout", float)
KMS = web.AppKey("kms", LocalKms)
REWRAP_TIMEOUT = 300.0


async def _service_states(request: web.Request) -> dict[str, str]:
    """Ping the gateway's own storage and every service over the bus; record their outbox backlogs."""
    bus, timeout = request.app[BUS], request.app[HEALTH_TIMEOUT]
    ctx = context(request)

    async def ping(service: str) -> str:
        try:
            result = await bus.call(rpc_name(service), "ping", {}, ctx, timeout=timeout)
        except CofferError:
            return "unavailable"
        if isinstance(result, dict) and isinstance(result.get("outbox_backlog"), int):
            OUTBOX_BACKLOG.labels(service).set(result["outbox_backlog"])
        return "ok"

    states = await asyncio.gather(*(ping(s) for s in SERVICES))
    return dict(zip(SERVICES, states, strict=True))


async def health(request: web.Request) -> web.Response:
    """Ping every service over the bus; 200 when all answer, else 503 naming the failing ones."""
    services = await _service_states(request)
    down = sorted(name for name, state in services.items() if state != "ok")
    body: dict[str, Any] = {"status": "degraded" if down else "ok", "services": services}
    if not down:
        return json_response(body)
    # Still the error envelope (with the health body beside it) so every failure reads alike.
    error = ServiceUnavailable("some services are unavailable", details={"unavailable": down})
    body["error"] = {**error.to_wire(), "request_id": context(request).request_id}
    return json_response(body, status=error.status)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: requests, latencies, RPC latency, outbox backlogs (no tenant data)."""
    await _service_states(request)
    return web.Response(body=render_metrics(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def init(request: web.Request) -> web.Response:
    """Once, on an empty system: root tenant, admin identity, allow-all policy, a token."""
    body = await read_model(request, InitRequest)
    secret = domain.new_client_secret()
    secret_hash = domain.hash_client_secret(secret)
    tenant = {"id": domain.new_id("ten"), "name": body.tenant_name, "kind": "partner"}
    identity = {
        "id": domain.new_id("idn"), "name": body.admin_name, "kind": "service",
        "allowed_scopes": domain.ALL_SCOPES, "partner_admin": True,
        "client_id": domain.new_id("cli"), "secret_hash": secret_hash,
    }
    policy = {
        "id": domain.new_id("pol"), "name": "root-admin",
        "description": "Allows everything; bound to the admin created by sys/init.",
        "rules": domain.ROOT_POLICY_RULES,
    }
    created = await request.app[REPO].initialise(
        tenant=tenant, identity=identity, policy=policy, binding_id=domain.new_id("bnd")
    )
    if not created:
        raise NameConflict("Coffer is already initialised")
    token, _ = request.app[SIGNER].issue(identity["id"], tenant["id"], domain.ALL_SCOPES)
    return json_response(
        {"tenant_id": tenant["id"], "client_id": identity["client_id"], "client_secret": secret,
         "token": token},
        status=201,
    )


async def jwks(request: web.Request) -> web.Response:
    return json_response(request.app[SIGNER].jwks())


async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    row = await request.app[REPO].whoami(who.identity_id, who.tenant_id)
    if row is None:
        raise TokenInvalid("the token's identity no longer exists")
    return json_response(
        {
            "identity": {"id": row["id"], "name": row["name"], "kind": row["kind"],
                         "partner_admin": row["partner_admin"]},
            "tenant": {"id": row["tenant_id"], "name": row["tenant_name"], "kind": row["tenant_kind"]},
            "scopes": sorted(who.scopes),
            "expires_at": who.expires_at.isoformat().replace("+00:00", "Z"),
        }
    )


async def rotate_kek(request: web.Request) -> web.Response:
    """A new key-encryption key; every service re-wraps its data keys under it (no value re-encrypted)."""
    kek_id = await request.app[REPO].rotate_kek(request.app[KMS])
    rewrapped: dict[str, int] = {}
    unreadable: dict[str, int] = {}
    for service in SERVICES:
        result = await request.app[BUS].call(rpc_name(service), "rewrap", {}, context(request), timeout=REWRAP_TIMEOUT)
        rewrapped[service] = int(result["rewrapped"])
        if result.get("unreadable"):
            unreadable[service] = int(result["unreadable"])
    # Unreadable data keys stay under their old KEK (which is kept): the
    # rotation goes on, and the operator learns where to look from the logs.
    return json_response({"kek_id": kek_id, "rewrapped": rewrapped, "unreadable": unreadable})


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API, generated from the route table."""
    return json_response(request.app[OPENAPI])


OPENAPI = web.AppKey("openapi", dict)

ROUTE_TABLE: tuple[Route, ...] = (
    Route("GET", "/v1/sys/health", health, public=True, statuses=(200,)),
    Route("GET", "/metrics", metrics, public=True),
    Route("POST", "/v1/sys/init", init, public=True, body=InitRequest, statuses=(201,), errors=("name_conflict",)),
    Route("GET", "/v1/auth/jwks", jwks, public=True),
    Route("GET", "/v1/auth/whoami", whoami),
    Route("POST", "/v1/sys/kms:rotate", rotate_kek, scope="admin", platform=True,
          target=lambda r: ("sys/kms", "rotate"), errors=("encryption_error", "forbidden")),
    Route("GET", "/v1/openapi.json", openapi_json, public=True),
)
