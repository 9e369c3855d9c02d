"""Coffer's shared package: errors, bus, db, crypto, config, logging, contracts."""
