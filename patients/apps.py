from __future__ import annotations

from django.apps import AppConfig


class PatientsConfig(AppConfig):
    name = "patients"

    def ready(self) -> None:
        from auditlog.registry import auditlog

        from patients.models import Admission, ApiToken, Bed, Patient, Ward, WardAccess

        # Change history: every create, update and delete, with the actor and address.
        for model in (Ward, Bed, Patient, Admission, WardAccess):
            auditlog.register(model)
        auditlog.register(ApiToken, exclude_fields=["digest", "last_used_at"])
