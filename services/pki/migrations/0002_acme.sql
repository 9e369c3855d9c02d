-- The ACME client (api.md §6, "ACME client"): accounts at an ACME CA, RFC 2136 DNS providers, and
-- orders worked on by a leased queue. Account keys, TSIG secrets and the certificates' private keys
-- are sealed like CA keys (AES-GCM under a data key wrapped by the KEK) and re-wrapped on KEK rotation.
CREATE TABLE acme_accounts (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL,
    directory_url text NOT NULL,
    email         text,
    ca_bundle     text,
    account_url   text NOT NULL,
    status        text NOT NULL,
    eab_kid       text,
    kek_id        text NOT NULL,
    wrapped_key   bytea NOT NULL,
    nonce         bytea NOT NULL,
    ciphertext    bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acme_accounts_by_tenant ON acme_accounts (tenant_id, id);

CREATE TABLE acme_dns_providers (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL,
    name        text COLLATE "C" NOT NULL,
    type        text NOT NULL,
    config      jsonb NOT NULL,
    kek_id      text NOT NULL,
    wrapped_key bytea NOT NULL,
    nonce       bytea NOT NULL,
    ciphertext  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);

-- One row per certificate the tenant wants kept: the first issue and every renewal run through it.
-- `status` is the current run's; `serial` names the newest certificate (in `certificates`).
CREATE TABLE acme_orders (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    account_id      text NOT NULL REFERENCES acme_accounts (id),
    dns_provider_id text NOT NULL REFERENCES acme_dns_providers (id),
    domains         text[] NOT NULL,
    status          text NOT NULL,
    order_url       text,
    problem         jsonb,
    attempts        int NOT NULL DEFAULT 0,
    due_at          timestamptz,
    lease_until     timestamptz,
    serial          text,
    renew_at        timestamptz,
    -- when to ask the CA's ARI again (RFC 9773: it may move the window earlier, e.g. before a mass revocation)
    ari_check_at    timestamptz,
    renewals        int NOT NULL DEFAULT 0,
    renewal_failed_at timestamptz,
    kek_id          text,
    wrapped_key     bytea,
    nonce           bytea,
    ciphertext      bytea,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX acme_orders_by_tenant ON acme_orders (tenant_id, id);
CREATE INDEX acme_orders_due ON acme_orders (due_at) WHERE status IN ('pending', 'processing');
CREATE INDEX acme_orders_renew ON acme_orders (renew_at) WHERE status = 'valid';
CREATE INDEX acme_orders_ari ON acme_orders (ari_check_at) WHERE status = 'valid' AND ari_check_at IS NOT NULL;

-- certificates an ACME CA issued: no local CA; the order they came from instead
ALTER TABLE certificates ALTER COLUMN ca_id DROP NOT NULL;
ALTER TABLE certificates ADD COLUMN acme_order_id text;
ALTER TABLE certificates ADD COLUMN chain text;
CREATE INDEX certificates_by_acme_order ON certificates (acme_order_id) WHERE acme_order_id IS NOT NULL;
