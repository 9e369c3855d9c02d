"""``/v1/exports``: age-encrypted bundles of secrets, built asynchronously (api.md §5.3).

Scope ``secrets:read``; feature flag ``exports``. Which secrets go in is
decided here, when the export is asked for: the live, unexpired secrets under
the prefix that the caller may ``read`` now (its policies, address, time and
MFA, like a read of each). The secrets service builds the bundle from those
paths. An export is seen (and its bundle fetched) by whoever asked for it, or
by a policy allowing ``read`` on ``exports/<id>``; to anyone else an export is
``export_not_found``, the answer an id that was never made gets (another
tenant's id, or one of the tenant's that isn't theirs: no existence oracle). Each export's audit entry
names ``exports/<id>``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from services.gateway.edge.routes import AUDIT_TARGET, Route, context, model_response, principal, read_model
from services.gateway.forward.access import fetched
from services.gateway.state import state
from shared.contracts.exports import EXPORT_ID, ExportBody, ExportCreate, ExportRef, ExportView
from shared.contracts.secrets import ListSecrets, validate_prefix
from shared.errors import ExportNotFound, ValidationError

#: at most this many secrets in one export (the service's limit too)
MAX_EXPORT_SECRETS = 10_000
_RECIPIENT_KINDS = ("age1", "ssh-ed25519 ")


async def _readable_paths(request: web.Request, prefix: str) -> list[str]:
    """Every live, unexpired secret under ``prefix`` the caller may ``read``, in path order."""
    st, who, ctx = state(request), principal(request), context(request)
    paths: list[str] = []
    cursor: str | None = None
    while True:
        page = await st.secrets.list(ctx, ListSecrets(prefix=prefix, limit=1000, cursor=cursor))
        now = datetime.now(UTC)
        live = [m for m in page.items if m.expires_at is None or m.expires_at > now]
        readable = await st.authorizer.listable_as(request, who, live, lambda m: f"secrets/{m.path}", "read")
        paths.extend(m.path for m in readable)
        if len(paths) > MAX_EXPORT_SECRETS:
            raise ValidationError.on("prefix", f"more than {MAX_EXPORT_SECRETS} secrets to export: narrow the prefix")
        cursor = page.next_cursor
        if not cursor:
            return paths


async def create_export(request: web.Request) -> web.Response:
    body = await read_model(request, ExportBody)
    prefix = validate_prefix(body.prefix)
    if not body.recipient.strip().startswith(_RECIPIENT_KINDS):  # the service parses it; this spares the scan
        raise ValidationError.on("recipient", "must be an age X25519 recipient (age1…) or an ssh-ed25519 public key")
    paths = await _readable_paths(request, prefix)
    view = await state(request).exports.create(context(request), ExportCreate(**body.model_dump(), paths=paths))
    request[AUDIT_TARGET] = (f"exports/{view.id}", "read")
    return model_response(view, status=202, headers={"Location": f"/v1/exports/{view.id}"})


async def _seen(request: web.Request) -> ExportView:
    """The export, if the caller asked for it or a policy lets it ``read`` ``exports/<id>``; else what an
    unknown id gets (the secrets service's ``export_not_found``, word for word)."""
    view = await state(request).exports.get(context(request), ExportRef(id=request.match_info["id"][:64]))
    if view.created_by is not None and view.created_by == principal(request).identity_id:
        request[AUDIT_TARGET] = (f"exports/{view.id}", "read")
    else:
        await fetched(request, (f"exports/{view.id}",), "read", _not_found(request.match_info["id"]))
    return view


def _not_found(export_id: str) -> ExportNotFound:
    """As services/secrets/export_store.py answers an id it doesn't hold."""
    return ExportNotFound(f"export '{export_id[:64]}' not found", details={"id": export_id[:64]})


async def get_export(request: web.Request) -> web.Response:
    return model_response(await _seen(request))


async def get_bundle(request: web.Request) -> web.Response:
    view = await _seen(request)
    got = await state(request).exports.bundle(context(request), ExportRef(id=view.id))
    return web.Response(body=got.bundle, content_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="{view.id}.age"', "Cache-Control": "no-store"})


_ID = {"id": {"type": "string", "pattern": EXPORT_ID}}

ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/exports", create_export, scope="secrets:read", body=ExportBody, statuses=(202,),
          errors=("invalid_path",)),
    Route("GET", "/v1/exports/{id}", get_export, scope="secrets:read", params=_ID, errors=("export_not_found",)),
    Route("GET", "/v1/exports/{id}/bundle", get_bundle, scope="secrets:read", params=_ID,
          media="application/octet-stream", errors=("export_not_found",)),
)
