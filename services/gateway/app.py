"""The gateway's service spec and lifespan: its state built, the HTTP server listening, ``iam.*`` served.

The gateway owns the ``gateway`` schema (tenants, identities, policies,
signing keys, the audit log) and answers ``iam.*`` RPC; it is the only HTTP
entry point. Its rooms: ``edge/`` (server, middlewares, route table, limits,
OpenAPI), ``iam/`` (identities, tenants, policies, tokens, MFA), ``audit/``,
``system/``, ``forward/`` (one module of forwarding routes per service), and
``vault/`` (the Vault-compatible listener, a second application on its own
address when ``COFFER_VAULT_LISTEN`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from services.gateway.access.sweeper import AccessSweeps
from services.gateway.bootstrap import build_app, build_state
from services.gateway.edge.server import GatewayRunner
from services.gateway.iam.authorizer import StandingPolicy
from services.gateway.iam.rpc import IamHandlers
from services.gateway.iam.tokens import signing_key_aad
from services.gateway.iam.totp import totp_aad
from services.gateway.methods.oidc import secret_aad
from services.gateway.replica import ReplicaSync
from services.gateway.settings import GatewaySettings, listen_address
from services.gateway.vault.answers import with_errors
from services.gateway.vault.app import build_vault_app
from shared import handover
from shared.contracts import rpc_table
from shared.db import SealedColumns, by_tenant_id
from shared.jobs import run_sweeps
from shared.runtime import Running, ServiceDeps, ServiceSpec


@asynccontextmanager
async def lifespan(deps: ServiceDeps) -> AsyncIterator[Running]:
    settings = deps.settings_of(GatewaySettings)
    state = await build_state(deps)
    sync = ReplicaSync(state.revocations, state.authorizer.rules, state.gates, state.identities)
    await sync.start(deps.bus)
    await state.events.start(deps.bus)
    # access requests that expire unanswered, grants that ended (written down: decisions never wait for it)
    sweeps = asyncio.create_task(run_sweeps(AccessSweeps(state.access, state.audit).sweeps(),
                                            settings.lifecycle_interval), name="gateway-access")

    def headers_for(remote: str | None) -> dict[str, str]:
        return state.limiter.peek("read", f"ip:{remote}").headers()

    runner = GatewayRunner(build_app(state), access_log=None, handle_signals=False, headers_for=headers_for)
    runners = [runner]
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.http_host, settings.http_port).start()
        urls = {}
        if settings.vault_listen:  # api.md §13: a second door, into the same state and middlewares
            vault = GatewayRunner(build_vault_app(state), access_log=None, handle_signals=False,
                                  headers_for=headers_for, shape=with_errors, any_method=True)
            runners.append(vault)
            await vault.setup()
            vault_host, vault_port = listen_address(settings.vault_listen)
            await web.TCPSite(vault, vault_host, vault_port).start()
            urls["vault"] = "http://{}:{}".format(*vault.addresses[0][:2])
        host, port = runner.addresses[0][:2]
        for address in (a for r in runners for a in r.addresses):  # never a target of the platform's own calls
            deps.platform.add(address[0], address[1])
        iam = IamHandlers(StandingPolicy(state.identities, state.policies))
        rpc = dict(rpc_table(iam))
        if deps.root is not None:  # a shamir installation's other processes get their share from here
            root = deps.root
            rpc.update(handover.handlers(lambda: root))
        yield Running(rpc=rpc, url=f"http://{host}:{port}", app=runner.app, urls=urls)
    finally:
        await state.events.close()  # open streams end first: the server's shutdown would wait for them
        for each in reversed(runners):
            await each.cleanup()
        await sync.close()
        sweeps.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeps
        await state.audit.close()


SPEC = ServiceSpec(
    name="gateway", migrations=Path(__file__).parent / "migrations", lifespan=lifespan, settings=GatewaySettings,
    # the dispatcher asks before delivering; each service alone asks for its share of the root keyring
    rpc_callers={"may": ("gateway", "webhooks"), **handover.callers()},
    # token signing keys, and every identity's TOTP secret
    sealed=(SealedColumns("signing_keys", key=("kid",), aad=lambda row: signing_key_aad(row["kid"])),
            SealedColumns("identities", key=("id",), prefix="mfa_", aad=lambda row: totp_aad(row["id"]),
                          columns=("tenant_id",), tenant=by_tenant_id),
            # oidc auth methods' client secrets (under the tenant's KEK)
            SealedColumns("auth_methods", key=("tenant_id", "name"), prefix="secret_",
                          aad=lambda row: secret_aad(row["tenant_id"], row["name"]), tenant=by_tenant_id)),
)
