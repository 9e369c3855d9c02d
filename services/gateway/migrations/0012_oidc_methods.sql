-- oidc auth methods (api.md §10, issue #30): people sign in through their OpenID provider.
-- A method's client secret is sealed under the tenant's KEK (secret_*; NULL for jwt methods), never in config.
ALTER TABLE auth_methods DROP CONSTRAINT auth_methods_type_check;
ALTER TABLE auth_methods ADD CONSTRAINT auth_methods_type_check CHECK (type IN ('jwt', 'oidc'));
ALTER TABLE auth_methods
    ADD COLUMN secret_kek_id      text,
    ADD COLUMN secret_wrapped_key bytea,
    ADD COLUMN secret_nonce       bytea,
    ADD COLUMN secret_ciphertext  bytea;

-- A sign-in between authorize and callback: found by the SHA-256 of the client's state (any replica can
-- finish it), used once (the callback deletes it), expiring after ten minutes.
CREATE TABLE auth_pending (
    state_hash     bytea PRIMARY KEY,
    tenant_id      text NOT NULL,
    method         text NOT NULL,
    role           text NOT NULL,
    redirect_uri   text NOT NULL,
    nonce          text NOT NULL,
    code_challenge text NOT NULL,
    expires_at     timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, method) REFERENCES auth_methods (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX auth_pending_expiry ON auth_pending (expires_at);
