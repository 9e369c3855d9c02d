-- Which door of the gateway a request came in by: the main API ('api') or the Vault-compatible
-- listener ('vault', api.md §13). Entries of the main API hash as before (the door is in an entry's
-- canonical form only when it is another), so chains written before this column still verify.
ALTER TABLE audit_log ADD COLUMN listener text NOT NULL DEFAULT 'api';
