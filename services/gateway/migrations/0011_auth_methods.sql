-- Auth methods (api.md §10, issue #30): a tenant's jwt methods and their roles; external identities,
-- one per (method, user claim value), made at their first login.
CREATE TABLE auth_methods (
    tenant_id  text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    type       text NOT NULL CHECK (type IN ('jwt')),
    config     jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE auth_roles (
    tenant_id  text NOT NULL,
    method     text NOT NULL,
    name       text NOT NULL,
    body       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, method, name),
    FOREIGN KEY (tenant_id, method) REFERENCES auth_methods (tenant_id, name) ON DELETE CASCADE
);

ALTER TABLE identities DROP CONSTRAINT identities_kind_check;
ALTER TABLE identities ADD CONSTRAINT identities_kind_check CHECK (kind IN ('service', 'user', 'external'));
ALTER TABLE identities
    ADD COLUMN external_method  text,
    ADD COLUMN external_subject text;
CREATE UNIQUE INDEX identities_external ON identities (tenant_id, external_method, external_subject)
    WHERE kind = 'external';
