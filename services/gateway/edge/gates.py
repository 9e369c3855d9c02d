"""Whether the door is open: maintenance mode and the operator's feature flags (api.md §2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from shared.contracts.events import Event
from shared.errors import FeatureDisabled, MaintenanceMode

FEATURE_PREFIXES = (("/v1/pki/acme", "acme"), ("/v1/pki", "pki"), ("/v1/webhooks", "webhooks"),
                    ("/v1/subscriptions", "webhooks"), ("/v1/engines", "dynamic"), ("/v1/leases", "dynamic"),
                    ("/v1/exports", "exports"), ("/v1/federation", "federation"))


def feature_of(path: str) -> str | None:
    """The feature area a path belongs to (for ``COFFER_DISABLED_FEATURES``)."""
    return next((feature for prefix, feature in FEATURE_PREFIXES
                 if path == prefix or path.startswith(prefix + "/") or path.startswith(prefix + ":")), None)


class Gates:
    """Maintenance mode (stored, switched on any replica, told to all by ``system.maintenance``) and flags."""

    def __init__(self, disabled_features: frozenset[str],
                 load_maintenance: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.disabled_features = disabled_features
        self._load = load_maintenance
        self.maintenance: dict[str, Any] = {"enabled": False, "message": None}

    def check_open(self, path: str) -> None:
        """503 ``maintenance_mode`` (but for ``/v1/sys/*``) or ``feature_disabled`` for the path's area."""
        if self.maintenance.get("enabled") and path.startswith("/v1/") and not path.startswith("/v1/sys/"):
            message = self.maintenance.get("message") or "Coffer is in maintenance"
            raise MaintenanceMode(str(message), details={"message": message})
        feature = feature_of(path)
        if feature in self.disabled_features:
            raise FeatureDisabled(f"the '{feature}' feature is disabled here", details={"feature": feature})

    def switched(self, enabled: bool, message: str | None) -> None:
        """Maintenance was switched (here, or on another replica: the event)."""
        self.maintenance = {"enabled": enabled, "message": message}

    async def reload(self) -> None:
        self.maintenance = await self._load()

    def on_event(self, event: Event) -> None:
        if event.type == "system.maintenance":
            self.switched(bool(event.data.get("enabled")), event.data.get("message"))
