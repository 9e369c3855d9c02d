"""Forwarding routes: one module per service behind the gateway, each through its typed client."""
