-- A tenant's own KMS key (BYOK, issue #29 item 4): {type: "awskms", key_id}; null: none.
ALTER TABLE tenants ADD COLUMN kms_key jsonb;
