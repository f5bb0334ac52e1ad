from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"

    def ready(self) -> None:
        # monitoring cannot import alerts (apps depend one way): it sends a hook instead.
        from alerts.dispatch import on_observations_recorded
        from monitoring.hooks import observations_recorded

        observations_recorded.connect(on_observations_recorded, dispatch_uid="alerts.evaluate")

        from auditlog.registry import auditlog

        from alerts.models import AlertRule

        # Alerts keep their own trail (AlertEvent); rules are configuration with a history.
        auditlog.register(AlertRule)
