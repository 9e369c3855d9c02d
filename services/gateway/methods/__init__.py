"""Auth methods (api.md §10, issue #30): a workload or a person logs in with a token its platform signed.

``models`` holds a ``jwt`` method's config and its roles, ``keys`` where the issuer's public keys come
from (pinned, a JWKS URL or OIDC discovery, every fetch through the outbound guard), and ``verify`` what
a token must be to log in with a role. None of them touches the database; the routes do.
"""
