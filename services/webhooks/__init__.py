"""The ``webhooks`` service: the webhook dispatcher: subscriptions and signed deliveries."""
