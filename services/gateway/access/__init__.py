"""Access requests (api.md §14): a requestable policy asked for, approved by others, bound until it ends."""
