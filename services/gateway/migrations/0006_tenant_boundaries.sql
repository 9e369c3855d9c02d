-- User names are unique within a tenant only (UNIQUE (tenant_id, name) already
-- holds for every identity): a name taken in another tenant no longer answers
-- name_conflict, which told strangers who the other tenants' users are.
DROP INDEX identities_user_name;

-- A revocation by jti applies to tokens of the tenant it was made in.
ALTER TABLE revoked_tokens DROP CONSTRAINT revoked_tokens_pkey;
ALTER TABLE revoked_tokens ADD PRIMARY KEY (tenant_id, jti);
