-- A version of its own can be soft-deleted (undone by undelete) or destroyed (its ciphertext gone for
-- good), as Vault's KV v2 does per version (api.md §13); the secret and its other versions stay. The
-- secret-wide soft delete (secrets.deleted_at, purge_after) is unchanged.
ALTER TABLE secret_versions
    ADD COLUMN deleted_at   timestamptz,
    ADD COLUMN destroyed_at timestamptz;
