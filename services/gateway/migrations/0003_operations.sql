-- Operator state (maintenance mode) and the tamper-evident audit log.
CREATE TABLE system_state (
    key        text PRIMARY KEY,
    value      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One hash chain per tenant: hash = SHA-256(prev_hash || canonical entry).
-- Sensitive request fields are kept only as HMAC-SHA256 under a per-tenant key.
CREATE TABLE audit_log (
    seq         bigserial PRIMARY KEY,
    tenant_id   text NOT NULL,
    at          timestamptz NOT NULL,
    identity_id text,
    action      text NOT NULL,
    resource    text NOT NULL,
    outcome     text NOT NULL,
    status      integer NOT NULL,
    client_ip   text,
    request_id  text NOT NULL,
    fields      jsonb NOT NULL DEFAULT '{}',
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL
);
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, seq);
