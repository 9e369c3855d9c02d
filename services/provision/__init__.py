"""Per-service credentials for distributed mode: one RabbitMQ user and one PostgreSQL role per service.

Holding one service's credentials is not holding the platform (docs/architecture.md, "Who may say what"):

- RabbitMQ user ``coffer-<prefix><service>``: configure only its own queues
  (``coffer.rpc.<rpc name>``, ``coffer.events.<service>…``, ``coffer.dead.<service>…``,
  ``coffer.bcast.<service>…``); write to the event and dead-letter exchanges,
  the default exchange (RPC replies go through it) and, for services that call
  others, the RPC exchange; read its own queues. Binding a queue needs read on
  the exchange, and all three exchanges are topic exchanges so that RabbitMQ's
  topic permissions (checked with the routing key at ``queue.bind`` and
  ``exchange.bind``, and at every publish) say which keys: on ``coffer.requests``
  bind only ``<its rpc name>.…``, publish only the methods it may call
  (``CALLS``); on ``coffer.events`` publish only the event types it owns
  (``shared.registry.EVENT_OWNERS``), bind only the ones it consumes; on
  ``coffer.dlx`` bind only its own consumers' names, publish nothing (RabbitMQ
  dead-letters without asking). So a queue of any name it may make can hold
  only its own traffic. The exchanges are declared here, by the operator;
  services declare them passively.
- PostgreSQL role ``coffer_<prefix><service>``: owns its schema and nothing
  else (it can't create schemas or read another service's).

Users and roles are global to the broker and the cluster, so each installation has names of its own:
``<prefix>`` is ``COFFER_SCHEMA_PREFIX`` when it is set (even empty), else one derived from the
installation's database and vhost (``default_prefix``). Schemas are named ``COFFER_SCHEMA_PREFIX``
+ service only (they are per database already). What provisioning makes is marked with the installation
(``<database>/<vhost>``): a RabbitMQ user tag and a PostgreSQL role comment, ``coffer-installation-<hash>``.
It refuses to reset the password of a user or role of that name that hasn't this installation's mark, or to
take a schema owned by another installation's role, unless told to (``--take-over``,
``COFFER_PROVISION_TAKE_OVER=1``): that would stop the processes that use them.

Passwords are fresh and random on every run and are never written to disk:
RabbitMQ gets salted SHA-256 hashes (``import_definitions``), PostgreSQL a
SCRAM verifier, so neither server's logs see them. The launcher
(``services.distributed``) hands each process only its own credentials.

    python -m services.provision --env-dir DIR [--take-over]  # writes DIR/<service>.env (0600) for other launchers
    python -m services.provision --compose deploy  # docker-compose's definitions and init script (dev passwords)
    python -m services.provision --consumer NAME --events 'secret.*'  # an event consumer (consumers.py)
"""

from services.provision.cli import main
from services.provision.compose import DEV_PASSWORDS, compose_files
from services.provision.credentials import ServiceCredentials, provision
from services.provision.installation import (
    MARK,
    TAKE_OVER_ENV,
    TAKE_OVER_HELP,
    amqp_user,
    default_prefix,
    installation_id,
    installation_mark,
    pg_role,
    postgres_conflicts,
    rabbitmq_conflicts,
    rabbitmq_users,
    refusal,
    user_prefix,
    vhost_of,
)
from services.provision.postgres import ensure_database, provision_postgres, scram_verifier
from services.provision.rabbitmq import (
    CALLERS,
    CALLS,
    CONSUMES,
    LEGACY_RPC_EXCHANGE,
    consumers,
    definitions,
    provision_rabbitmq,
    rabbit_password_hash,
    rabbit_permissions,
    topic_permissions,
    upgrade_exchanges,
)

__all__ = [
    "CALLERS", "CALLS", "CONSUMES", "DEV_PASSWORDS", "LEGACY_RPC_EXCHANGE", "MARK", "TAKE_OVER_ENV", "TAKE_OVER_HELP",
    "ServiceCredentials", "amqp_user", "compose_files", "consumers", "default_prefix", "definitions",
    "ensure_database", "installation_id", "installation_mark", "main", "pg_role", "postgres_conflicts", "provision",
    "provision_postgres", "provision_rabbitmq", "rabbit_password_hash", "rabbit_permissions", "rabbitmq_conflicts",
    "rabbitmq_users", "refusal", "scram_verifier", "topic_permissions", "upgrade_exchanges", "user_prefix",
    "vhost_of",
]
