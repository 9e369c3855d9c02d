-- Tenants, identities, policies + bindings, and the token signing keys.
CREATE TABLE tenants (
    id         text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('standard', 'partner')),
    parent_id  text REFERENCES tenants (id),
    quotas     jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE identities (
    id             text PRIMARY KEY,
    tenant_id      text NOT NULL REFERENCES tenants (id),
    name           text NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('service', 'user')),
    allowed_scopes text[] NOT NULL,
    partner_admin  boolean NOT NULL DEFAULT false,
    client_id      text UNIQUE,
    secret_hash    text,          -- scrypt, never the secret
    password_hash  text,          -- scrypt, never the password
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE policies (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    name        text NOT NULL,
    description text,
    rules       jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

CREATE TABLE bindings (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id),
    policy_id   text NOT NULL REFERENCES policies (id),
    identity_id text NOT NULL REFERENCES identities (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (policy_id, identity_id)
);

-- Ed25519 token signing keys; the private half sealed by the KMS. The newest
-- unretired key signs; every unexpired one verifies (rotation keeps old tokens valid).
CREATE TABLE signing_keys (
    kid         text PRIMARY KEY,
    public_key  bytea NOT NULL,
    kek_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    retired_at  timestamptz
);
