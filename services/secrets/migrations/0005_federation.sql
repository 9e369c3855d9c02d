-- Federation backends (api.md §5.4): another store mounted at a path. The credentials are sealed
-- like secret values (AAD: tenant and name) and re-wrapped on KEK rotation; `config` holds the rest.
-- Mounts of one tenant never overlap (checked under a per-tenant advisory lock on create).
CREATE TABLE federation_backends (
    tenant_id   text NOT NULL,
    name        text COLLATE "C" NOT NULL,
    type        text NOT NULL,
    mount_path  text COLLATE "C" NOT NULL,
    config      jsonb NOT NULL,
    kek_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name),
    UNIQUE (tenant_id, mount_path)
);
