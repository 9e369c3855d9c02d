-- Engines: the config's public part in clear, its secret part (the admin password) only as
-- AES-256-GCM ciphertext under a data key wrapped by the KMS (associated data: tenant and name).
-- A deleted tenant's engines are kept, marked, until every lease made through them is gone from
-- its target.
CREATE TABLE engines (
    tenant_id        text NOT NULL,
    name             text COLLATE "C" NOT NULL,
    type             text NOT NULL,
    config           jsonb NOT NULL,
    kek_id           text NOT NULL,
    wrapped_key      bytea NOT NULL,
    nonce            bytea NOT NULL,
    ciphertext       bytea NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    admin_rotated_at timestamptz,
    tenant_deleted   boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE roles (
    tenant_id  text NOT NULL,
    engine     text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    spec       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, engine, name),
    FOREIGN KEY (tenant_id, engine) REFERENCES engines (tenant_id, name) ON DELETE CASCADE
);

-- Leases. status: creating (the user is being made: invisible, revoked by the sweeper if its
-- maker dies), active, revoking (removal from the target pending or being retried; ends as
-- end_status), revoked, expired. The role's spec is copied in: a role changed or deleted later
-- does not change how this lease's user is removed.
CREATE TABLE leases (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    engine          text COLLATE "C" NOT NULL,
    role            text COLLATE "C" NOT NULL,
    username        text NOT NULL,
    spec            jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('creating', 'active', 'revoking', 'revoked', 'expired')),
    end_status      text CHECK (end_status IN ('revoked', 'expired')),
    issued_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    max_expires_at  timestamptz NOT NULL,
    ended_at        timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    locked_until    timestamptz,
    last_error      text,
    FOREIGN KEY (tenant_id, engine) REFERENCES engines (tenant_id, name)
);
CREATE INDEX leases_by_tenant ON leases (tenant_id, id);
CREATE INDEX leases_by_engine ON leases (tenant_id, engine, role) WHERE status IN ('creating', 'active', 'revoking');
-- the sweeper's two questions: which active leases have expired, which removals are due again
CREATE INDEX leases_expiring ON leases (expires_at) WHERE status = 'active';
CREATE INDEX leases_due ON leases (next_attempt_at) WHERE status IN ('creating', 'revoking');
