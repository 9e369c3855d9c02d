-- Secrets and their versions. Paths compare bytewise (COLLATE "C") so that
-- listing is in path order and a prefix is an index range.
CREATE TABLE secrets (
    tenant_id       text NOT NULL,
    path            text COLLATE "C" NOT NULL,
    current_version integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    purge_after     timestamptz,
    PRIMARY KEY (tenant_id, path)
);
CREATE INDEX secrets_purge_due ON secrets (purge_after) WHERE deleted_at IS NOT NULL;

-- One row per version; the value only as AES-256-GCM ciphertext under a data
-- key wrapped by the KMS (associated data: tenant, path, version).
CREATE TABLE secret_versions (
    tenant_id     text NOT NULL,
    path          text COLLATE "C" NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    secret_type   text NOT NULL,
    metadata      jsonb NOT NULL DEFAULT '{}',
    expires_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text,
    kek_id        text NOT NULL,
    wrapped_key   bytea NOT NULL,
    nonce         bytea NOT NULL,
    ciphertext    bytea NOT NULL,
    expired_event_at timestamptz,
    PRIMARY KEY (tenant_id, path, version),
    FOREIGN KEY (tenant_id, path) REFERENCES secrets (tenant_id, path) ON DELETE CASCADE
);
CREATE INDEX secret_versions_expiry_due ON secret_versions (expires_at)
    WHERE expires_at IS NOT NULL AND expired_event_at IS NULL;
CREATE INDEX secret_versions_by_kek ON secret_versions (kek_id);
