-- Every service schema gets an outbox (events written in the state change's
-- transaction, published by the relay) and an inbox (ids of events already
-- consumed, for idempotent consumers).
CREATE TABLE outbox (
    id          uuid PRIMARY KEY,
    type        text        NOT NULL,
    tenant_id   text,
    request_id  text,
    occurred_at timestamptz NOT NULL,
    data        jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer     NOT NULL DEFAULT 0,
    seq         bigserial
);
CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL;

CREATE TABLE inbox (
    consumer     text        NOT NULL,
    event_id     uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
