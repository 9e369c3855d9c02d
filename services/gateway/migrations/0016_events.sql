-- Event streams (api.md §12, issue #31): the events of the last COFFER_EVENT_RETENTION, in one order.
-- Written once per event by whichever gateway replica takes it off the bus; every replica streams from here,
-- so each stream's Last-Event-ID names a place in that order on any replica. ``seq`` is handed out under the
-- row lock of ``event_seq``: a batch takes its numbers only after the previous batch committed, so a reader
-- that has seen seq n has seen every smaller one (a bigserial would let 11 commit before 10).
CREATE TABLE events (
    seq       bigint      PRIMARY KEY,
    id        uuid        NOT NULL UNIQUE,
    tenant_id text        NOT NULL,
    type      text        NOT NULL,
    -- the event as a webhook receives it ({id, type, tenant_id, occurred_at, request_id, data}): what `data:` says
    body      text        NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant ON events (tenant_id, seq);
CREATE INDEX events_stored ON events (stored_at);

CREATE TABLE event_seq (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    last bigint  NOT NULL
);
INSERT INTO event_seq VALUES (true, 0);

-- The new scope: admins could grant every scope they held, so they hold this one too (nobody else gets it
-- unasked).
UPDATE identities SET allowed_scopes = array_append(allowed_scopes, 'events')
 WHERE 'admin' = ANY (allowed_scopes) AND NOT 'events' = ANY (allowed_scopes);
