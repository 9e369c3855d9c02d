-- Failed password logins, per user (key 'user:<identity id>') and per unknown
-- name (key 'name:<HMAC of tenant and name>', so that an unknown name costs the
-- same write as a known one and its timing tells nothing). Ten failures within
-- 15 minutes lock the key for 15 minutes; attempts during the lock don't extend it.
CREATE TABLE login_failures (
    key          text PRIMARY KEY,
    failures     integer NOT NULL,
    window_start timestamptz NOT NULL,
    locked_until timestamptz
);
CREATE INDEX login_failures_age ON login_failures (window_start);
