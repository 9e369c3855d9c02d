-- How long a tenant's deleted secrets stay restorable (a duration, "30d"); NULL: the platform's
-- COFFER_SECRET_RETENTION.
ALTER TABLE tenants ADD COLUMN secret_retention text;
