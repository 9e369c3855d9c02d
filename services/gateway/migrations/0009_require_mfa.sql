-- require_mfa (issue #27): a user with a TOTP enrolment must give a code at login when its tenant
-- or the user itself requires it; a password alone then answers mfa_required.
ALTER TABLE tenants ADD COLUMN require_mfa boolean NOT NULL DEFAULT false;
ALTER TABLE identities ADD COLUMN require_mfa boolean NOT NULL DEFAULT false;
