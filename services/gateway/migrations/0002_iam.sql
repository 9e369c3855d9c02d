-- Identity and policy: user logins, TOTP (sealed), revocations.
ALTER TABLE identities
    ADD COLUMN mfa_kek_id      text,
    ADD COLUMN mfa_wrapped_key bytea,
    ADD COLUMN mfa_nonce       bytea,
    ADD COLUMN mfa_ciphertext  bytea,
    ADD COLUMN mfa_last_step   bigint NOT NULL DEFAULT 0;
-- users log in with {username, password}: a user's name is unique across tenants
CREATE UNIQUE INDEX identities_user_name ON identities (name) WHERE kind = 'user';
CREATE INDEX bindings_by_identity ON bindings (identity_id);

-- Revoked tokens (by jti) and identities whose every token is void (deleted).
CREATE TABLE revoked_tokens (
    jti        text PRIMARY KEY,
    tenant_id  text NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_tokens_expiry ON revoked_tokens (expires_at);
CREATE TABLE revoked_identities (
    identity_id text PRIMARY KEY,
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
