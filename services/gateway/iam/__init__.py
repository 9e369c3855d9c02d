"""The identity and access room (api.md §3–4): its domain, repositories, tokens, authorisation, routes."""
