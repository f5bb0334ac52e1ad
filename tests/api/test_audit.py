"""Every read of a patient's records through the API is in the access log: who, whom, what."""

from __future__ import annotations

import pytest

from patients.models import AccessLog, ApiToken
from tests.api.hospital import Hospital, session_client, token_client

pytestmark = pytest.mark.django_db


def _read(hospital: Hospital, url: str) -> list[AccessLog]:
    before = set(AccessLog.objects.values_list("pk", flat=True))
    response = session_client(hospital.clinician_a).get(url)
    assert response.status_code == 200, response.content
    return list(AccessLog.objects.exclude(pk__in=before).order_by("pk"))


@pytest.mark.parametrize(
    ("template", "action"),
    [
        ("/api/v1/patients/", "api.patients.list"),
        ("/api/v1/patients/{patient}/", "api.patients.retrieve"),
        ("/api/v1/patients/{patient}/news2/", "api.news2.list"),
        ("/api/v1/admissions/", "api.admissions.list"),
        ("/api/v1/admissions/{admission}/", "api.admissions.retrieve"),
        ("/api/v1/observations/?patient={patient}", "api.observations.list"),
        ("/api/v1/observations/trend/?patient={patient}", "api.trend.retrieve"),
        ("/api/v1/alerts/", "api.alerts.list"),
        ("/api/v1/alerts/{alert}/", "api.alerts.retrieve"),
    ],
)
def test_it_logs_each_read_of_a_patients_records(
    hospital: Hospital, template: str, action: str
) -> None:
    url = template.format(
        patient=hospital.a.patient.public_id,
        admission=hospital.a.admission.public_id,
        alert=hospital.a.alert.public_id,
    )
    [entry] = _read(hospital, url)
    assert entry.action == action
    assert entry.patient == hospital.a.patient
    assert entry.user == hospital.clinician_a
    assert entry.resource == url.split("?")[0]
    assert entry.address == "127.0.0.1"


def test_it_logs_one_row_per_patient_on_the_page(hospital: Hospital) -> None:
    entries = _read(hospital, "/api/v1/patients/")
    assert [entry.patient for entry in entries] == [hospital.a.patient]
    admin_entries = []
    before = set(AccessLog.objects.values_list("pk", flat=True))
    session_client(hospital.admin).get("/api/v1/patients/")
    admin_entries = list(AccessLog.objects.exclude(pk__in=before))
    assert {entry.patient for entry in admin_entries} == {
        hospital.a.patient,
        hospital.b.patient,
        hospital.a.unadmitted,
        hospital.b.unadmitted,
    }


def test_it_names_the_token_that_read(hospital: Hospital) -> None:
    token_client(hospital.token_a_read).get(f"/api/v1/patients/{hospital.a.patient.public_id}/")
    entry = AccessLog.objects.get(action="api.patients.retrieve")
    assert entry.token == ApiToken.objects.get(user=hospital.clinician_a)
    assert entry.user == hospital.clinician_a


def test_it_logs_nothing_when_nothing_was_shown(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).get(
        f"/api/v1/patients/{hospital.b.patient.public_id}/"
    )
    assert response.status_code == 404
    assert not AccessLog.objects.exists()


def test_it_logs_nothing_for_wards_and_beds(hospital: Hospital) -> None:
    assert _read(hospital, "/api/v1/wards/") == []
    assert _read(hospital, "/api/v1/beds/") == []
