"""Operators' commands beside the platform: ``python -m services.admin backup | restore`` (issue #35).

``backup`` (services/admin/backup.py) writes one consistent snapshot of every schema and the seal's files,
age-encrypted; ``restore`` (services/admin/restore.py) loads one into an empty installation and checks it;
services/admin/shredding.py keeps tenants deleted after a backup unreadable in its restore.
"""
