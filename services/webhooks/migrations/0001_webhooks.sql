-- Webhooks (endpoint + signing secret, sealed), subscriptions, deliveries and their attempts.
CREATE TABLE webhooks (
    id             text PRIMARY KEY,
    tenant_id      text NOT NULL,
    url            text NOT NULL,
    description    text,
    enabled        boolean NOT NULL DEFAULT true,
    disabled_reason text,
    kek_id         text NOT NULL,
    wrapped_key    bytea NOT NULL,
    nonce          bytea NOT NULL,
    ciphertext     bytea NOT NULL,
    -- during a secret rotation's overlap the previous secret signs too
    prev_kek_id    text,
    prev_wrapped_key bytea,
    prev_nonce     bytea,
    prev_ciphertext bytea,
    prev_until     timestamptz,
    failing_since  timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id, id);

CREATE TABLE subscriptions (
    id           text PRIMARY KEY,
    tenant_id    text NOT NULL,
    webhook_id   text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_types  text[] NOT NULL,
    path_pattern text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant_id);

CREATE TABLE deliveries (
    id              text PRIMARY KEY,           -- also the webhook-id header: stable across retries
    tenant_id       text NOT NULL,
    webhook_id      text NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    subscription_id text REFERENCES subscriptions (id) ON DELETE SET NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempt_count   integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- one delivery per (subscription, event), however often RabbitMQ redelivers the event
CREATE UNIQUE INDEX deliveries_once ON deliveries (subscription_id, event_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, created_at);

CREATE TABLE attempts (
    id              bigserial PRIMARY KEY,
    delivery_id     text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    at              timestamptz NOT NULL DEFAULT now(),
    response_status integer,
    error_code      text,
    duration_ms     integer NOT NULL,
    response_body   text
);
CREATE INDEX attempts_by_delivery ON attempts (delivery_id, id);
