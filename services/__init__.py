"""Coffer's services: gateway, secrets, pki, lease, webhooks."""
