-- /metrics' coffer_certificates_expiring (deploy/prometheus alert rules): live certificates by expiry, counted at
-- each scrape (certificates_expiry_due leaves out those whose expiring event has gone out).
CREATE INDEX certificates_live_by_expiry ON certificates (not_after) WHERE revoked_at IS NULL;
