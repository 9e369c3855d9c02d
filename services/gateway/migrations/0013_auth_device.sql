-- The device authorization grant of oidc methods (RFC 8628; api.md §10, issue #30): a device sign-in
-- between POST …/device and the poll that ends it. Found by the SHA-256 of Coffer's handle (any replica can
-- answer a poll); the provider's device code is encrypted under a key derived from the handle, which only
-- the polling client holds. A poll is let through to the provider at most once per interval_s (next_poll_at);
-- the row goes when the sign-in ends, or expires with the provider's code.
CREATE TABLE auth_device (
    handle_hash  bytea PRIMARY KEY,
    tenant_id    text NOT NULL,
    method       text NOT NULL,
    role         text NOT NULL,
    nonce        text NOT NULL,
    device_code  bytea NOT NULL,
    interval_s   integer NOT NULL,
    next_poll_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, method) REFERENCES auth_methods (tenant_id, name) ON DELETE CASCADE
);
CREATE INDEX auth_device_method ON auth_device (tenant_id, method);
CREATE INDEX auth_device_expiry ON auth_device (expires_at);
