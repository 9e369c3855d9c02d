-- Every token carries its identity's generation ("gen"); raising it voids every
-- token issued before (lowered scopes, a new secret or password, an MFA reset).
ALTER TABLE identities ADD COLUMN token_generation integer NOT NULL DEFAULT 0;
CREATE INDEX identities_bumped ON identities (id) WHERE token_generation > 0;
