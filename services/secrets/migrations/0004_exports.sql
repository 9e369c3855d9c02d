-- Exports (api.md §5.3): an asynchronous job per row. `paths` are the secrets the caller could read
-- when it asked (emptied once the job ends); `bundle` is the age ciphertext, never the plaintext.
-- A row and its bundle are deleted at `expires_at` (created_at + the export TTL, 24 h by default).
CREATE TABLE exports (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL,
    prefix      text COLLATE "C" NOT NULL,
    format      text NOT NULL,
    recipient   text NOT NULL,
    paths       text[] NOT NULL,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'ready', 'failed')),
    count       integer NOT NULL,
    done        integer NOT NULL DEFAULT 0,
    bundle      bytea,
    error       text,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    finished_at timestamptz,
    lease_until timestamptz,
    attempts    integer NOT NULL DEFAULT 0
);
CREATE INDEX exports_pending ON exports (created_at) WHERE status = 'pending';
CREATE INDEX exports_expiry ON exports (expires_at);
CREATE INDEX exports_tenant ON exports (tenant_id);
