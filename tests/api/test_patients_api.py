"""Finding patients: by MRN (exact or its beginning) and by name, within the caller's wards."""

from __future__ import annotations

import pytest

from tests import factories
from tests.api.hospital import Hospital, session_client

pytestmark = pytest.mark.django_db

PATIENTS = "/api/v1/patients/"


@pytest.fixture
def named(hospital: Hospital) -> Hospital:
    ward = hospital.a.ward
    factories.admitted_patient(
        factories.bed(ward), mrn="H1234567", family_name="Okafor", given_name="Ada"
    )
    factories.admitted_patient(
        factories.bed(ward), mrn="H1234999", family_name="Lindqvist", given_name="Okko"
    )
    factories.admitted_patient(
        factories.bed(ward), mrn="X7654321", family_name="Moreau", given_name="Claire"
    )
    return hospital


def _mrns(hospital: Hospital, **params: str) -> list[str]:
    response = session_client(hospital.clinician_a).get(PATIENTS, params)
    assert response.status_code == 200
    return sorted(row["mrn"] for row in response.json()["results"])


def test_it_finds_a_patient_by_exact_mrn(named: Hospital) -> None:
    assert _mrns(named, mrn="H1234567") == ["H1234567"]


def test_it_finds_patients_by_the_beginning_of_the_mrn(named: Hospital) -> None:
    assert _mrns(named, mrn="H1234") == ["H1234567", "H1234999"]


def test_it_finds_patients_by_family_or_given_name_in_any_case(named: Hospital) -> None:
    assert _mrns(named, name="oka") == ["H1234567"]
    assert _mrns(named, name="ok") == ["H1234567", "H1234999"]
    assert _mrns(named, name="claire MOR") == ["X7654321"]


def test_it_never_finds_a_patient_of_another_ward(named: Hospital) -> None:
    assert _mrns(named, mrn=named.b.patient.mrn) == []


def test_it_shows_the_patients_current_stay(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).get(
        f"{PATIENTS}{hospital.a.patient.public_id}/"
    )
    assert response.status_code == 200
    assert response.json()["current_stay"] == {
        "admission": str(hospital.a.admission.public_id),
        "bed": str(hospital.a.bed.public_id),
        "bed_label": "1",
        "ward": hospital.a.ward.code,
    }


def test_it_shows_no_stay_for_a_patient_not_admitted(hospital: Hospital) -> None:
    response = session_client(hospital.admin).get(f"{PATIENTS}{hospital.a.unadmitted.public_id}/")
    assert response.status_code == 200
    assert response.json()["current_stay"] is None


def test_it_answers_a_malformed_id_with_the_same_404(hospital: Hospital) -> None:
    response = session_client(hospital.admin).get(f"{PATIENTS}12345/")
    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "detail": "Not found."}


def test_it_lists_only_the_wards_the_clinician_may_see(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).get("/api/v1/wards/")
    assert [ward["code"] for ward in response.json()["results"]] == [hospital.a.ward.code]


def test_it_filters_beds_by_ward(hospital: Hospital) -> None:
    response = session_client(hospital.admin).get("/api/v1/beds/", {"ward": hospital.b.ward.code})
    assert {bed["id"] for bed in response.json()["results"]} == {
        str(hospital.b.bed.public_id),
        str(hospital.b.free_bed.public_id),
    }
