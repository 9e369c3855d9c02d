-- The service's salt S_s: with its share of the root keyring it opens the service's keyring file
-- (shared/keyring.py). Only this service's database role can read it.
CREATE TABLE keyring (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
