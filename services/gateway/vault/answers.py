"""Vault's shapes on the Vault listener: the answer envelope, moments, tokens as ``auth``, and ``errors``.

Every answer of Vault's HTTP API is one envelope (``request_id, lease_id, renewable, lease_duration, data,
wrap_info, warnings, auth``); a failure is ``{"errors": ["<message>"]}``. A failure here keeps Coffer's status
and envelope (``error.code`` to branch on) and gains ``errors`` beside it, so Vault clients show the message
(``vault_errors``, the listener's outermost middleware, after ``edge_middleware`` made every failure an
envelope). Moments are RFC 3339 strings and "never" is ``""``, as Vault writes them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
from aiohttp import web

from services.gateway.edge.routes import Handler, context, json_response
from services.gateway.state import state
from shared.contracts.times import answer_json, rfc3339

#: body fields a failure's answer carries besides the envelope (a deleted KV version's ``data``)
EXTRA = web.RequestKey("vault_extra", dict)


def answer(request: web.Request, *, data: Any = None, auth: dict[str, Any] | None = None,
           warnings: list[str] | None = None, status: int = 200) -> web.Response:
    """Vault's answer envelope around ``data`` (or ``auth``)."""
    return json_response({"request_id": context(request).request_id, "lease_id": "", "renewable": False,
                          "lease_duration": 0, "data": data, "wrap_info": None, "warnings": warnings or None,
                          "auth": auth}, status=status)


def moment(value: datetime | None) -> str:
    """A moment as Vault writes one: RFC 3339, or ``""`` for none."""
    return rfc3339(value) if value is not None else ""


def with_errors(body: dict[str, Any]) -> dict[str, Any]:
    """A Coffer error envelope as Vault clients read it too: ``errors: [message]`` beside ``error``."""
    error = body.get("error")
    if isinstance(error, dict) and "errors" not in body:
        return {**body, "errors": [str(error.get("message", ""))]}
    return body


@web.middleware
async def vault_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure's envelope gains ``errors`` (and what the handler left under ``EXTRA``)."""
    response = await handler(request)
    if response.status >= 400 and isinstance(response, web.Response) and response.body \
            and response.content_type == "application/json":
        try:
            body = orjson.loads(response.body)  # type: ignore[arg-type]
        except orjson.JSONDecodeError:
            return response
        if isinstance(body, dict) and "error" in body:
            response.body = answer_json(with_errors({**request.get(EXTRA, {}), **body}))
    return response


async def token_auth(request: web.Request, token: str, *, tenant_id: str, renewable: bool = True) -> dict[str, Any]:
    """A Coffer token as Vault's ``auth`` block: ``client_token``, its id as ``accessor``, the identity as
    ``entity_id``, the policies bound to it, its tenant and scopes in ``metadata``. The accessor is the login's
    (its first token's id, the same for every renewal): revoking it revokes them all."""
    claims = unverified_claims(token)
    policies = await state(request).policies.policy_names_for(str(claims["sub"]))
    return {"client_token": token, "accessor": str(claims.get("sid") or claims["jti"]), "policies": policies,
            "token_policies": policies, "identity_policies": [],
            "metadata": {"tenant_id": tenant_id, "scope": str(claims.get("scope", ""))},
            "lease_duration": max(0, int(claims["exp"]) - int(claims["iat"])), "renewable": renewable,
            "entity_id": str(claims["sub"]), "token_type": "service", "orphan": True, "num_uses": 0}


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a token this gateway just issued or verified (its signature is not checked again)."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
