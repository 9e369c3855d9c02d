-- Small service-internal keys (cursor HMAC key, ...) sealed by the KMS, shared by replicas.
CREATE TABLE sealed_keys (
    name        text PRIMARY KEY,
    kek_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
