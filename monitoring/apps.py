from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from monitoring.models import Device

        # Readings are immutable records of their own; devices are configuration. The token
        # digest and last_seen_at (a heartbeat) stay out of the history.
        auditlog.register(Device, exclude_fields=["token_digest", "last_seen_at"])
