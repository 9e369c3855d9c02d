-- Each entry of a tenant's chain has at most one successor: a second entry
-- linking to the same previous hash (a fork) is refused. Writers append
-- optimistically from the head they last saw and re-read it on a conflict
-- (services/gateway/audit.py), in one statement per batch and without a lock.
CREATE UNIQUE INDEX audit_log_chain_link ON audit_log (tenant_id, prev_hash);
