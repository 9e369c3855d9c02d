-- /metrics' coffer_webhook_deliveries_failed (deploy/prometheus alert rules): deliveries that gave up in the
-- last hour, counted at each scrape without reading the whole table.
CREATE INDEX deliveries_failed ON deliveries (updated_at) WHERE status = 'failed';
