"""System routes (api.md §2, §11): health, metrics, init, KEK rotation, maintenance, the seal, the OpenAPI
description."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import Field, StrictBool, StrictStr, model_validator

from services.gateway.edge.routes import Route, context, json_response, query, read_model
from services.gateway.iam import domain
from services.gateway.iam.models import ROOT_POLICY_RULES, InitRequest
from services.gateway.state import GatewayState, state
from services.gateway.system import seal as seal_control
from shared import custody, keyring
from shared.contracts import Contract, JsonInt, Query
from shared.errors import CofferError, InvalidRequest, NameConflict, ServiceUnavailable
from shared.metrics import OUTBOX_BACKLOG, SERVICE_GAUGES, SERVICE_UP
from shared.metrics import render as render_metrics
from shared.registry import SERVICES

REWRAP_TIMEOUT = 300.0


class SysInitRequest(InitRequest):
    """``POST /v1/sys/init``: the names, and with ``COFFER_SEAL=shamir`` how R is split (api.md §11)."""

    secret_shares: JsonInt = Field(5, ge=1, le=16)
    secret_threshold: JsonInt = Field(3, ge=1, le=16)

    @model_validator(mode="after")
    def _threshold_within_shares(self) -> SysInitRequest:
        if self.secret_threshold > self.secret_shares:
            raise ValueError("secret_threshold can't be more than secret_shares")
        return self


class RotateRootRequest(Contract):
    """``POST /v1/sys/rotate-root``: with a shamir seal, how the new root key is split (the current counts
    unless given); an auto seal takes no field."""

    secret_shares: JsonInt | None = Field(None, ge=1, le=16)
    secret_threshold: JsonInt | None = Field(None, ge=1, le=16)


class UnsealRequest(Contract):
    """``POST /v1/sys/unseal``: one shamir share (base64 of 38 bytes: 52 characters; spaces are dropped)."""

    share: StrictStr = Field(min_length=1, max_length=128)


class MaintenanceBody(Contract):
    enabled: StrictBool
    message: StrictStr | None = Field(None, max_length=500)


async def service_states(request: web.Request, *, gauges: bool = False) -> dict[str, str]:
    """Ping every service (the gateway's own storage too) over the bus; record their outbox backlogs (and, for
    ``gauges``, what each counts for the alert rules)."""
    st, ctx = state(request), context(request)

    async def ping(service: str) -> str:
        try:
            result = await st.services.ping(ctx, service, timeout=st.settings.health_timeout, gauges=gauges)
        except CofferError:
            SERVICE_UP.labels(service).set(0)
            return "unavailable"
        SERVICE_UP.labels(service).set(1)
        if result.outbox_backlog is not None:
            OUTBOX_BACKLOG.labels(service).set(result.outbox_backlog)
        for name, value in result.gauges.items():
            if name in SERVICE_GAUGES:
                SERVICE_GAUGES[name].labels(service).set(value)
        return "ok"

    return dict(zip(SERVICES, await asyncio.gather(*(ping(s) for s in SERVICES)), strict=True))


async def health(request: web.Request) -> web.Response:
    """Ping every service over the bus; 200 when all answer, else 503 naming the failing ones."""
    services = await service_states(request)
    down = sorted(name for name, status in services.items() if status != "ok")
    body: dict[str, Any] = {"status": "degraded" if down else "ok", "services": services}
    if not down:
        return json_response(body)
    # Still the error envelope (with the health body beside it) so every failure reads alike.
    error = ServiceUnavailable("some services are unavailable", details={"unavailable": down})
    body["error"] = {**error.to_wire(), "request_id": context(request).request_id}
    return json_response(body, status=error.status)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: requests, latencies, RPC latency, outbox backlogs (no tenant data)."""
    await service_states(request, gauges=True)
    return web.Response(body=render_metrics(), content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def initialise(st: GatewayState, body: InitRequest) -> dict[str, Any]:
    """Once, on an empty system: root tenant, admin identity, allow-all policy, a token (``NameConflict`` after).

    The handler's work, callable in-process: the sealed gateway's ``sys/init`` (shamir) runs it once the
    platform it has just unsealed is up, and answers it beside the shares."""
    secret = domain.new_client_secret()
    tenant = {"id": domain.new_id("ten"), "name": body.tenant_name, "kind": "partner"}
    identity = {
        "id": domain.new_id("idn"), "name": body.admin_name, "kind": "service",
        "allowed_scopes": domain.ALL_SCOPES, "partner_admin": True,
        "client_id": domain.new_id("cli"), "secret_hash": domain.hash_client_secret(secret),
    }
    policy = {
        "id": domain.new_id("pol"), "name": "root-admin",
        "description": "Allows everything; bound to the admin created by sys/init.", "rules": ROOT_POLICY_RULES,
    }
    if not await st.system.initialise(tenant=tenant, identity=identity, policy=policy,
                                      binding_id=domain.new_id("bnd")):
        raise NameConflict("Coffer is already initialised")
    token, _ = st.signer.issue(identity["id"], tenant["id"], domain.ALL_SCOPES)
    return {"tenant_id": tenant["id"], "client_id": identity["client_id"], "client_secret": secret, "token": token}


async def init(request: web.Request) -> web.Response:
    """Once, on an empty system: root tenant, admin identity, allow-all policy, a token.

    ``secret_shares`` / ``secret_threshold`` matter only to the sealed gateway of a shamir installation
    not initialised yet (services/sealed.py); here the seal exists already (or is not shamir) and they
    are ignored, as Vault ignores them for an auto seal."""
    reserved = custody.installed()
    if reserved is not None and reserved.init_reserved:  # the sealed gateway's shamir init runs it in-process
        raise NameConflict("Coffer is being initialised")
    body = await read_model(request, SysInitRequest)
    return json_response(await initialise(state(request), body), status=201)


class RotateQuery(Query):
    """``?retire_legacy=true``: once no value is left under them, drop the root keyring's own KEKs (those of
    before the key hierarchy), so that a database copy from before it opens nothing any more."""

    retire_legacy: bool = False


async def rotate_kek(request: web.Request) -> web.Response:
    """New key-encryption keys in every service's keyring (its own and one per tenant); each service
    re-wraps its data keys under them (no value re-encrypted)."""
    st, asked = state(request), query(request, RotateQuery)
    legacy_left = 0
    kek_ids: dict[str, str] = {}
    rewrapped: dict[str, int] = {}
    unreadable: dict[str, int] = {}
    for service in SERVICES:
        result = await st.services.rewrap(context(request), service, timeout=REWRAP_TIMEOUT)
        kek_ids[service], rewrapped[service] = result.kek_id, result.rewrapped
        if result.unreadable:
            unreadable[service] = result.unreadable
        legacy_left += result.legacy_left
    # Unreadable data keys stay under their old KEK (which is kept): the
    # rotation goes on, and the operator learns where to look from the logs.
    retired = 0
    if asked.retire_legacy:
        if legacy_left or st.root is None:
            raise InvalidRequest("the root keyring's KEKs can't be retired: values are still sealed under them"
                                 if legacy_left else "this process does not hold the root keyring",
                                 details={"legacy_left": legacy_left})
        with keyring.exclusive(st.root.path):
            retired = st.root.retire_legacy()
    return json_response({"kek_id": kek_ids["gateway"], "kek_ids": kek_ids, "rewrapped": rewrapped,
                          "unreadable": unreadable, "legacy_left": legacy_left, "legacy_retired": retired})


async def get_maintenance(request: web.Request) -> web.Response:
    return json_response(state(request).gates.maintenance)


async def put_maintenance(request: web.Request) -> web.Response:
    """Root admins only: while on, every call but ``/v1/sys/*`` is 503 ``maintenance_mode``."""
    body = await read_model(request, MaintenanceBody)
    st = state(request)
    await st.system.set_maintenance(body.enabled, body.message, context(request).request_id)
    st.gates.switched(body.enabled, body.message)  # here at once; other replicas on the event
    return json_response(st.gates.maintenance)


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this API, generated from the route table."""
    return json_response(state(request).openapi)


async def seal_status(request: web.Request) -> web.Response:
    """``{sealed, type, progress, threshold, initialized}``: unsealed here (a sealed process answers from
    services/sealed.py)."""
    return json_response(seal_control.status(state(request).settings))


async def unseal(request: web.Request) -> web.Response:
    """Unsealed already: nothing to do (the share is read and dropped), as Vault answers."""
    await read_model(request, UnsealRequest)
    status = seal_control.status(state(request).settings)
    return json_response({"sealed": False, "progress": 0, "threshold": status["threshold"]})


async def seal(request: web.Request) -> web.Response:
    """Root admins: seal this process again (its platform stops; R and the keys are forgotten)."""
    st = state(request)
    return json_response(await seal_control.request_seal(st, context(request)))


async def rotate_root(request: web.Request) -> web.Response:
    """Root admins: a new root key; the root keyring re-sealed under it (shamir: new shares, shown once)."""
    body = await read_model(request, RotateRootRequest)
    return json_response(await seal_control.rotate_root(state(request), context(request), body.secret_shares,
                                                         body.secret_threshold))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/sys/health", health, public=True, statuses=(200,)),
    Route("GET", "/metrics", metrics, public=True, media="text/plain"),
    Route("POST", "/v1/sys/init", init, public=True, body=SysInitRequest, statuses=(201,),
          errors=("name_conflict",)),
    Route("GET", "/v1/sys/seal-status", seal_status, public=True),
    Route("POST", "/v1/sys/unseal", unseal, public=True, category="auth", body=UnsealRequest),
    Route("POST", "/v1/sys/seal", seal, scope="admin", platform=True, target=lambda r: ("sys/seal", "manage"),
          errors=("forbidden",)),
    Route("POST", "/v1/sys/rotate-root", rotate_root, scope="admin", platform=True, body=RotateRootRequest,
          target=lambda r: ("sys/seal", "rotate"),
          errors=("invalid_request", "service_unavailable", "encryption_error", "forbidden")),
    Route("POST", "/v1/sys/kms:rotate", rotate_kek, scope="admin", platform=True, query=RotateQuery,
          target=lambda r: ("sys/kms", "rotate"), errors=("encryption_error", "forbidden", "invalid_request")),
    Route("GET", "/v1/sys/maintenance", get_maintenance, scope="admin", platform=True, errors=("forbidden",),
          target=lambda r: ("sys/maintenance", "read")),
    Route("PUT", "/v1/sys/maintenance", put_maintenance, scope="admin", platform=True,
          target=lambda r: ("sys/maintenance", "manage"), body=MaintenanceBody, errors=("forbidden",)),
    Route("GET", "/v1/openapi.json", openapi_json, public=True),
)
