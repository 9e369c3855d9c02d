-- What an attempt keeps of the receiver's answer (issue #27): its status, a bounded set of its headers
-- (content-type, retry-after), and a body of at most 1 KiB, only from a receiver at public addresses.
-- Bodies stored before were up to 64 KiB from any address the allow-list let through, the operator's
-- private networks included, and can't be told apart now: they are dropped. Error texts that named the
-- cause of a failed connection (which tells closed, open and silent ports apart) read like the new one.
ALTER TABLE attempts ADD COLUMN response_headers jsonb;
UPDATE attempts SET response_body = NULL WHERE response_status IS NOT NULL AND response_body IS NOT NULL;
UPDATE attempts SET response_body = 'could not connect'
    WHERE response_status IS NULL AND response_body LIKE 'connection failed:%';
