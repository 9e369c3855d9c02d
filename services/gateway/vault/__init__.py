"""The Vault-compatible listener (api.md §13): Vault's paths and shapes over the gateway's own checks and clients."""
