-- Rotation (api.md §5.2): policies that give matching secrets a new generated value every `interval`.
-- Each write records on the secret which policy it follows and when it is next due (the rotation
-- policies are read under a shared advisory lock their changes take exclusively, and a change
-- re-schedules the tenant's secrets in its own transaction), so the scheduler's claim is one
-- indexed range scan. A failed rotation keeps its attempt count and error code and is due again
-- after a backoff.
CREATE TABLE rotation_policies (
    tenant_id        text NOT NULL,
    name             text COLLATE "C" NOT NULL,
    path_pattern     text NOT NULL,
    "interval"       text NOT NULL,
    interval_seconds bigint NOT NULL,
    generator        jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

ALTER TABLE secrets
    ADD COLUMN rotation_policy   text,
    ADD COLUMN rotate_after      timestamptz,
    ADD COLUMN rotation_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN rotation_error    text;

CREATE INDEX secrets_rotate_after ON secrets (rotate_after) WHERE rotate_after IS NOT NULL AND deleted_at IS NULL;
