-- Access requests (api.md §14, issue #32): a requestable policy is asked for, approved by others, and bound to
-- the requester until expires_at. A policy's `request` ({max_duration, approvals, approvers}) makes it
-- requestable; NULL: it can't be asked for.
ALTER TABLE policies ADD COLUMN request jsonb;

-- A grant is a binding with the request it came from and its end. Decisions ignore a binding whose
-- expires_at has passed (the rule cache keeps it per binding), so its end needs no event; the sweeper
-- deletes the row later. Standing bindings (request_id NULL) stay one per (policy, identity); grants may
-- overlap them and each other.
ALTER TABLE bindings
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN request_id text;
ALTER TABLE bindings DROP CONSTRAINT bindings_policy_id_identity_id_key;
CREATE UNIQUE INDEX bindings_standing ON bindings (policy_id, identity_id) WHERE request_id IS NULL;
CREATE INDEX bindings_expiring ON bindings (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE access_requests (
    id               text PRIMARY KEY,
    tenant_id        text NOT NULL REFERENCES tenants (id),
    requester_id     text NOT NULL,
    -- the policy by id (a policy deleted and made again under its name is another policy) and its name
    policy_id        text NOT NULL,
    policy           text NOT NULL,
    duration         text NOT NULL,
    duration_seconds integer NOT NULL,
    reason           text NOT NULL,
    -- stored: pending, approved, denied, cancelled, revoked, expired. A pending request past pending_until
    -- and an approved one past expires_at read as expired before the sweeper writes it.
    status           text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'cancelled', 'revoked',
                                                     'expired')),
    -- [{identity_id, comment, at}] in order; `approvals` distinct approvers grant it
    approvals        jsonb NOT NULL DEFAULT '[]',
    approvals_required integer NOT NULL,
    pending_until    timestamptz NOT NULL,
    -- the grant, once approved
    binding_id       text,
    expires_at       timestamptz,
    -- the decision that closed it (denied, cancelled, revoked; approved: the last approver) and when
    decided_by       text,
    comment          text,
    decided_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX access_requests_pending_due ON access_requests (pending_until) WHERE status = 'pending';
CREATE INDEX access_requests_grant_due ON access_requests (expires_at) WHERE status = 'approved';
CREATE INDEX access_requests_by_tenant ON access_requests (tenant_id, id);
CREATE INDEX access_requests_by_requester ON access_requests (tenant_id, requester_id, policy_id);
