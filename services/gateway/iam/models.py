"""What callers send to the identity API and what it shows them: request models and views, without I/O."""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, StrictStr, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema

from services.gateway.iam.domain import ALL_SCOPES
from shared.contracts import DURATION_SCHEMA, Contract, JsonInt
from shared.contracts.system import KmsKey
from shared.durations import parse_duration
from shared.errors import ValidationError

NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$"
POLICY_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TOTP_DIGITS, TOTP_STEP = 6, 30


#: a scope, as the description shows it: one of the known ones (validators below say which were unknown)
Scope = Annotated[str, Field(json_schema_extra={"enum": list(ALL_SCOPES)})]
StrictScope = Annotated[StrictStr, Field(json_schema_extra={"enum": list(ALL_SCOPES)})]


class ClientCredentials(Contract):
    """``POST /v1/auth/token`` with client credentials (JSON or form)."""

    grant_type: str | None = Field(None, pattern="^client_credentials$")
    client_id: str = Field(min_length=1, max_length=200)
    client_secret: str = Field(min_length=1, max_length=500, repr=False)
    scopes: list[Scope] | None = Field(None, max_length=len(ALL_SCOPES))

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str] | None) -> list[str] | None:
        unknown = sorted(set(value or ()) - set(ALL_SCOPES))
        if unknown:
            raise ValueError(f"unknown scopes {unknown}; known: {list(ALL_SCOPES)}")
        return value


class InitRequest(Contract):
    """``POST /v1/sys/init``: optional names for the root tenant and its admin."""

    tenant_name: str = Field("root", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    admin_name: str = Field("admin", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


ROOT_POLICY_RULES: list[dict[str, Any]] = [
    {
        "effect": "allow",
        "paths": ["**"],
        "capabilities": ["read", "list", "write", "delete", "restore", "purge", "rotate",
                         "issue", "sign", "approve", "revoke", "manage"],
    }
]


def _scopes(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    unknown = sorted(set(value) - set(ALL_SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {unknown}; known: {list(ALL_SCOPES)}")
    return [s for s in ALL_SCOPES if s in value]


class IdentityCreate(Contract):
    name: StrictStr = Field(pattern=NAME)
    kind: Literal["service", "user"]
    allowed_scopes: list[StrictScope] = Field(max_length=len(ALL_SCOPES) * 2)
    password: StrictStr | None = Field(None, min_length=12, max_length=1024, repr=False)
    partner_admin: StrictBool = False
    #: a user with a TOTP enrolment must give a code at login (its tenant's ``require_mfa`` too)
    require_mfa: StrictBool = False

    _check_scopes = field_validator("allowed_scopes")(_scopes)

    @model_validator(mode="after")
    def _password_for_users_only(self) -> IdentityCreate:
        if self.kind == "user" and self.password is None:
            raise ValueError("a user identity needs a password (at least 12 characters)")
        if self.kind == "service" and self.password is not None:
            raise ValueError("service identities authenticate with a client secret, not a password")
        if self.kind == "service" and self.require_mfa:
            raise ValueError("require_mfa is for users: service identities log in with a client secret, no code")
        return self


class IdentityPatch(Contract):
    allowed_scopes: list[StrictScope] | None = None
    password: StrictStr | None = Field(None, min_length=12, max_length=1024, repr=False)
    partner_admin: StrictBool | None = None
    rotate_client_secret: StrictBool = False
    #: true: a TOTP code at every login (once enrolled); lifting one's own needs a fresh step-up, and no
    #: identity of a tenant that requires MFA can be set to false
    require_mfa: StrictBool | None = None

    _check_scopes = field_validator("allowed_scopes")(_scopes)


#: a quota: a count (null in a merge patch lifts it)
Quota = Annotated[JsonInt, Field(ge=0, le=2_000_000_000)]


class Quotas(Contract):
    max_secrets: Quota | None = None
    max_leases: Quota | None = None
    max_certificates: Quota | None = None
    max_webhooks: Quota | None = None
    requests_per_minute: Quota | None = None


def _not_null(value: object) -> object:
    """For fields that may be left out but not sent as ``null`` (the description offers no ``null``)."""
    if value is None:
        raise ValueError("may be left out, but not null")
    return value


#: a tenant's secret retention: how long its deleted secrets stay restorable
Retention = Annotated[StrictStr, Field(max_length=40, json_schema_extra=DURATION_SCHEMA)]
RETENTION_BOUNDS = (3600, 3650 * 86400)


def retention_seconds(text: str | None) -> int | None:
    """Seconds of a tenant's ``secret_retention`` (``invalid_duration``; between 1 hour and 10 years)."""
    if text is None:
        return None
    seconds = parse_duration(text, field="secret_retention")
    if not RETENTION_BOUNDS[0] <= seconds <= RETENTION_BOUNDS[1]:
        raise ValidationError.on("secret_retention", "between 1h and 3650d")
    return seconds


class TenantCreate(Contract):
    name: StrictStr = Field(pattern=NAME)
    parent_id: StrictStr | None = None
    kind: Literal["standard", "partner"] = "standard"
    quotas: Quotas = Field(default_factory=Quotas)
    #: left out: the platform's COFFER_SECRET_RETENTION (30d by default)
    secret_retention: Retention | None = None
    #: true: every user of the tenant with a TOTP enrolment must give a code at login
    require_mfa: StrictBool = False
    #: the tenant's own KMS key (BYOK): its KEKs are wrapped by it too (shared/byok.py)
    kms_key: KmsKey | None = None


class TenantPatch(Contract):
    """``PATCH /v1/tenants/{id}``, a JSON merge patch (RFC 7396): omitted fields stay, ``null`` removes.

    ``quotas`` merges key by key (``{"max_secrets": null}`` lifts that quota,
    ``"quotas": null`` lifts them all); ``quotas`` and ``kind`` are the
    partner's above, never the tenant's own.
    """

    # absent or a value: an explicit null is refused (so the description does not offer null)
    name: Annotated[StrictStr, Field(pattern=NAME)] | SkipJsonSchema[None] = None
    kind: Literal["standard", "partner"] | SkipJsonSchema[None] = None
    quotas: Quotas | None = None
    #: null: back to the platform's default
    secret_retention: Retention | None = None
    require_mfa: StrictBool | SkipJsonSchema[None] = None
    #: null: the tenant's KEKs no longer wrapped by its own KMS key
    kms_key: KmsKey | None = None

    def quota_changes(self) -> dict[str, Any] | None:
        """The quotas merge patch as given (explicit nulls kept), ``None`` when ``quotas`` is absent."""
        if "quotas" not in self.model_fields_set:
            return None
        return {} if self.quotas is None else self.quotas.model_dump(exclude_unset=True)

    _absent_not_null = field_validator("name", "kind", "require_mfa", mode="before")(_not_null)


#: the tenant fields only the partner above may set
PARTNER_FIELDS = ("quotas", "kind", "kms_key")


#: what the description says of ``rules`` (policy.parse_rules checks them: invalid_policy / invalid_glob)
RULES_SCHEMA: dict[str, Any] = {"type": "array", "minItems": 1, "maxItems": 100, "items": {"type": "object"}}


#: the longest grant a requestable policy may allow: just-in-time access, not a standing binding
MAX_GRANT = 30 * 86400
#: who may approve: an identity's id, or ``policy:<name>`` (the identities with a standing binding to it)
Approver = Annotated[StrictStr, Field(pattern=r"^(idn_[0-9a-f]{1,60}|policy:[a-z0-9][a-z0-9_-]{0,62})$")]


class RequestRule(Contract):
    """A policy's ``request``: it can be asked for (api.md §14), for at most ``max_duration``, granted once
    ``approvals`` distinct approvers said yes (only those ``approvers`` names, when given)."""

    max_duration: Annotated[StrictStr, Field(max_length=40, json_schema_extra=DURATION_SCHEMA)]
    approvals: JsonInt = Field(1, ge=1, le=10)
    approvers: list[Approver] | None = Field(None, min_length=1, max_length=50)

    @field_validator("max_duration")
    @classmethod
    def _at_most_30_days(cls, value: str) -> str:
        if parse_duration(value, field="request.max_duration") > MAX_GRANT:
            raise ValidationError.on("request.max_duration", "at most 30d")
        return value

    @model_validator(mode="after")
    def _enough_approvers(self) -> RequestRule:
        names = set(self.approvers or ())
        if self.approvers and not any(a.startswith("policy:") for a in names) and len(names) < self.approvals:
            raise ValueError("approvers name fewer identities than the approvals needed")
        return self


class PolicyBody(Contract):
    """``POST /v1/policies`` (with ``name``) and ``PUT /v1/policies/{name}`` (without)."""

    name: Annotated[StrictStr, Field(pattern=POLICY_NAME)] | SkipJsonSchema[None] = None
    description: StrictStr | None = Field(None, max_length=1000)
    rules: Any = Field(None, json_schema_extra=RULES_SCHEMA)
    #: absent or null: the policy can't be asked for
    request: RequestRule | None = None


class PolicyCreate(PolicyBody):
    """What the description says ``POST /v1/policies`` takes: ``PolicyBody`` with ``name`` and ``rules``."""

    name: StrictStr = Field(pattern=POLICY_NAME)
    rules: Any = Field(json_schema_extra=RULES_SCHEMA)


class BindingCreate(Contract):
    policy: StrictStr = Field(pattern=POLICY_NAME)
    identity_id: StrictStr = Field(min_length=1, max_length=64)


class RevokeRequest(Contract):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["token"]}, {"required": ["jti"]}]})

    token: Annotated[StrictStr, Field(max_length=8192)] | SkipJsonSchema[None] = Field(None, repr=False)
    jti: Annotated[StrictStr, Field(max_length=64)] | SkipJsonSchema[None] = None

    _absent_not_null = field_validator("token", "jti", mode="before")(_not_null)

    @model_validator(mode="after")
    def _exactly_one(self) -> RevokeRequest:
        if (self.token is None) == (self.jti is None):
            raise ValueError("give either token or jti")
        return self


class TotpCode(Contract):
    totp_code: StrictStr = Field(pattern=r"^[0-9]{6}$", repr=False)


class UserCredentials(Contract):
    """``POST /v1/auth/token`` for users: names are unique per tenant, ``tenant_id`` left out = the root tenant."""

    grant_type: StrictStr | None = Field(None, pattern="^password$")
    tenant_id: StrictStr | None = Field(None, min_length=1, max_length=64)
    username: StrictStr = Field(min_length=1, max_length=200)
    password: StrictStr = Field(min_length=1, max_length=1024, repr=False)
    totp_code: StrictStr | None = Field(None, pattern=r"^[0-9]{6}$", repr=False)
    scopes: list[StrictScope] | None = None

    _check_scopes = field_validator("scopes")(_scopes)


def new_totp_secret() -> bytes:
    return secrets.token_bytes(20)


def identity_view(row: Any) -> dict[str, Any]:
    """An identity as the API shows it (never a hash or a secret)."""
    return {
        "id": row["id"], "tenant_id": row["tenant_id"], "name": row["name"], "kind": row["kind"],
        "allowed_scopes": list(row["allowed_scopes"]), "partner_admin": row["partner_admin"],
        "client_id": row["client_id"], "mfa_enrolled": row["mfa_kek_id"] is not None,
        "require_mfa": row["require_mfa"],
        **({"external": {"method": row["external_method"], "subject": row["external_subject"]}}
           if row["kind"] == "external" else {}),
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def tenant_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "kind": row["kind"], "parent_id": row["parent_id"],
            "quotas": row["quotas"], "secret_retention": row["secret_retention"],
            "require_mfa": row["require_mfa"], "kms_key": row["kms_key"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"]}


def policy_view(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "description": row["description"], "rules": row["rules"],
            "request": row["request"], "created_at": row["created_at"], "updated_at": row["updated_at"]}


def binding_view(row: Any) -> dict[str, Any]:
    """A binding; a grant (api.md §14) with the access request it came from and its end."""
    return {"id": row["id"], "policy": row["policy"], "identity_id": row["identity_id"],
            "expires_at": row["expires_at"], "request_id": row["request_id"], "created_at": row["created_at"]}
