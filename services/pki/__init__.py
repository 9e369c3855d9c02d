"""The ``pki`` service: CAs, roles, certificates, CSRs, ACME."""
