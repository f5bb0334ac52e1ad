"""A small hospital for the FHIR tests: two wards, a patient in each, their staff."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pydantic import BaseModel

from monitoring.models import Device, Observation
from monitoring.vitals import VITALS
from patients.models import Patient, Ward
from tests import factories

FHIR_JSON = "application/fhir+json"
T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)


@dataclass
class Hospital:
    ward: Ward
    other_ward: Ward
    patient: Patient
    other_patient: Patient
    device: Device
    clinician: User
    administrator: User


@pytest.fixture
def hospital(db: None) -> Hospital:
    ward, other_ward = factories.ward(), factories.ward()
    admission = factories.admitted_patient(
        factories.bed(ward),
        family_name="Ash",
        given_name="Alice",
        date_of_birth=dt.date(1941, 3, 9),
        sex=Patient.Sex.FEMALE,
    )
    other = factories.admitted_patient(factories.bed(other_ward))
    return Hospital(
        ward=ward,
        other_ward=other_ward,
        patient=admission.patient,
        other_patient=other.patient,
        device=factories.device(admission.bed),
        clinician=factories.clinician(ward),
        administrator=factories.administrator(),
    )


@pytest.fixture
def clinician_client(client: Client, hospital: Hospital) -> Client:
    client.force_login(hospital.clinician)
    return client


def reading(
    patient: Patient | None,
    *,
    at: dt.datetime,
    code: str = "8867-4",
    value: float = 72.0,
    device: Device | None = None,
    artifact: bool = False,
) -> Observation:
    """An unsaved device reading (save it, or bulk_create many)."""
    return Observation(
        patient=patient,
        device=device,
        code=code,
        value=value,
        unit=VITALS[code].unit,
        observed_at=at,
        received_at=timezone.now(),
        artifact=artifact,
    )


def readings(
    patient: Patient, device: Device, count: int, *, start: dt.datetime = T0, **fields: Any
) -> list[Observation]:
    return Observation.objects.bulk_create(
        reading(patient, at=start + dt.timedelta(minutes=i), device=device, **fields)
        for i in range(count)
    )


def fhir(response: Any, model: type[BaseModel], status: int = 200) -> dict[str, Any]:
    """Assert the status and FHIR JSON content type, validate the body with the R4B model, and
    return the body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    model.model_validate(body)
    return body


@pytest.fixture
def replica_reads(settings: Any, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names of the models read through the replica route during the test.

    The suite has no replica, so the replica alias is pointed at the default database and
    the router is watched: a read it sends to the alias went through ``reads_from_replica``.
    """
    from config.routers import ReplicaRouter

    settings.READ_REPLICA_ALIAS = "default"
    routed: set[str] = set()
    original = ReplicaRouter.db_for_read

    def watched(self: ReplicaRouter, model: Any, **hints: Any) -> str | None:
        alias = original(self, model, **hints)
        if alias is not None:
            routed.add(model.__name__)
        return alias

    monkeypatch.setattr(ReplicaRouter, "db_for_read", watched)
    return routed
