"""Admit, transfer, discharge through the API: the services' refusals are 409s, never 500s."""

from __future__ import annotations

import pytest

from patients.api_access import api_token_issue
from patients.models import Admission
from patients.services import admission_discharge
from tests import factories
from tests.api.hospital import Hospital, session_client, token_client

pytestmark = pytest.mark.django_db

ADMISSIONS = "/api/v1/admissions/"


def test_it_admits_a_patient_to_a_free_bed(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        ADMISSIONS,
        {
            "patient": str(hospital.a.unadmitted.public_id),
            "bed": str(hospital.a.free_bed.public_id),
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["patient"] == str(hospital.a.unadmitted.public_id)
    assert body["ward"] == hospital.a.ward.code
    assert body["is_open"] is True
    assert Admission.objects.get(public_id=body["id"]).bed == hospital.a.free_bed


def test_it_refuses_an_occupied_bed_with_409(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        ADMISSIONS,
        {"patient": str(hospital.a.unadmitted.public_id), "bed": str(hospital.a.bed.public_id)},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "bed_occupied"
    assert "detail" in response.json()


def test_it_refuses_to_admit_an_admitted_patient_with_409(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        ADMISSIONS,
        {"patient": str(hospital.a.patient.public_id), "bed": str(hospital.b.free_bed.public_id)},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "patient_already_admitted"


def test_it_answers_unknown_references_with_400_and_the_fields(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        ADMISSIONS,
        {"patient": "not-a-uuid", "bed": "6f1c2a4e-3b7d-4e8a-9c1f-0a2b3c4d5e6f"},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert set(body["fields"]) == {"patient", "bed"}


def test_it_transfers_into_a_new_admission(hospital: Hospital) -> None:
    url = f"{ADMISSIONS}{hospital.a.admission.public_id}/transfer/"
    response = session_client(hospital.admin).post(
        url, {"bed": str(hospital.b.free_bed.public_id)}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["ward"] == hospital.b.ward.code
    assert response.json()["id"] != str(hospital.a.admission.public_id)
    hospital.a.admission.refresh_from_db()
    assert hospital.a.admission.end_reason == Admission.EndReason.TRANSFERRED


def test_it_refuses_a_transfer_to_the_same_bed_with_409(hospital: Hospital) -> None:
    url = f"{ADMISSIONS}{hospital.a.admission.public_id}/transfer/"
    response = session_client(hospital.admin).post(
        url, {"bed": str(hospital.a.bed.public_id)}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["code"] == "same_bed"


def test_it_refuses_a_second_discharge_with_409(hospital: Hospital) -> None:
    admin = session_client(hospital.admin)
    url = f"{ADMISSIONS}{hospital.a.admission.public_id}/discharge/"
    first = admin.post(url)
    second = admin.post(url)
    assert first.status_code == 200
    assert first.json()["end_reason"] == "discharged"
    assert second.status_code == 409
    assert second.json() == {"code": "not_admitted", "detail": "This admission is already closed."}


def test_it_refuses_writes_to_a_token_without_the_write_scope(hospital: Hospital) -> None:
    # An administrator's token limited to reading.
    _, plain = api_token_issue(user=hospital.admin, name="reader", scopes=["read"])
    response = token_client(plain).post(f"{ADMISSIONS}{hospital.a.admission.public_id}/discharge/")
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_it_filters_admissions_by_patient_ward_and_openness(hospital: Hospital) -> None:
    closed = factories.admitted_patient(factories.bed(hospital.a.ward))
    admission_discharge(admission=closed)
    client = session_client(hospital.clinician_a)
    open_ones = client.get(ADMISSIONS, {"open": "true"}).json()["results"]
    closed_ones = client.get(ADMISSIONS, {"open": "false"}).json()["results"]
    by_patient = client.get(ADMISSIONS, {"patient": str(closed.patient.public_id)}).json()
    assert {row["id"] for row in closed_ones} == {str(closed.public_id)}
    assert str(hospital.a.admission.public_id) in {row["id"] for row in open_ones}
    assert [row["id"] for row in by_patient["results"]] == [str(closed.public_id)]
