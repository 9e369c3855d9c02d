-- Certificate authorities. The private key only as AES-256-GCM ciphertext
-- under a data key wrapped by the KMS (associated data: the CA's id); the
-- current CRL kept beside it, regenerated on every revocation.
CREATE TABLE cas (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    name            text NOT NULL,
    common_name     text NOT NULL,
    key_type        text NOT NULL,
    parent_id       text REFERENCES cas (id),
    serial          text NOT NULL,
    not_before      timestamptz NOT NULL,
    not_after       timestamptz NOT NULL,
    max_path_length integer,
    certificate     text NOT NULL,
    kek_id          text NOT NULL,
    wrapped_key     bytea NOT NULL,
    nonce           bytea NOT NULL,
    ciphertext      bytea NOT NULL,
    -- how OCSP requests name this CA: SHA-1 and SHA-256 of its subject and of its public key
    sha1_name_hash  bytea NOT NULL,
    sha1_key_hash   bytea NOT NULL,
    sha256_name_hash bytea NOT NULL,
    sha256_key_hash bytea NOT NULL,
    crl_number      bigint NOT NULL DEFAULT 0,
    crl             bytea,
    crl_next_update timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX cas_by_tenant ON cas (tenant_id, id);
CREATE INDEX cas_by_sha1_key ON cas (sha1_key_hash);
CREATE INDEX cas_by_sha256_key ON cas (sha256_key_hash);
CREATE INDEX cas_crl_due ON cas (crl_next_update);

CREATE TABLE roles (
    tenant_id   text NOT NULL,
    name        text COLLATE "C" NOT NULL,
    ca_id       text NOT NULL,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);

-- Every certificate a CA signed (intermediate CAs' too, role NULL); never the leaf's key.
CREATE TABLE certificates (
    serial            text PRIMARY KEY,
    tenant_id         text NOT NULL,
    ca_id             text NOT NULL REFERENCES cas (id),
    role              text,
    common_name       text NOT NULL,
    sans              text[] NOT NULL DEFAULT '{}',
    ip_sans           text[] NOT NULL DEFAULT '{}',
    not_before        timestamptz NOT NULL,
    not_after         timestamptz NOT NULL,
    certificate       text NOT NULL,
    revoked_at        timestamptz,
    revocation_reason text,
    expiring_event_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificates_by_tenant ON certificates (tenant_id, serial);
CREATE INDEX certificates_live ON certificates (tenant_id, not_after);
CREATE INDEX certificates_by_ca ON certificates (ca_id);
CREATE INDEX certificates_revoked ON certificates (ca_id) WHERE revoked_at IS NOT NULL;
CREATE INDEX certificates_expiry_due ON certificates (not_after)
    WHERE expiring_event_at IS NULL AND revoked_at IS NULL;

CREATE TABLE csrs (
    id            text PRIMARY KEY,
    tenant_id     text NOT NULL,
    role          text NOT NULL,
    csr           text NOT NULL,
    subject       text NOT NULL,
    sans          text[] NOT NULL DEFAULT '{}',
    status        text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'signed', 'rejected')),
    submitted_by  text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    decided_by    text,
    decided_at    timestamptz,
    reason        text,
    serial        text
);
CREATE INDEX csrs_by_tenant ON csrs (tenant_id, id);

CREATE TABLE trust_anchors (
    id                 text PRIMARY KEY,
    tenant_id          text NOT NULL,
    name               text NOT NULL,
    subject            text NOT NULL,
    not_after          timestamptz NOT NULL,
    fingerprint_sha256 text NOT NULL,
    certificate        text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
CREATE INDEX trust_anchors_by_tenant ON trust_anchors (tenant_id, id);
