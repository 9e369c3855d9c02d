-- Who created a subscription: an event is delivered only while that identity
-- may `list` the event's resource (checked when the event is fanned out).
-- Subscriptions made before this column existed have no owner and get nothing.
ALTER TABLE subscriptions ADD COLUMN created_by text;
