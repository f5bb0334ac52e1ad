"""GET /api/v1/wards/<code>/latest-vitals/: a ward's newest readings, scoped and audited."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.models import AccessLog
from tests import factories
from tests.api.hospital import Hospital, observation_for, session_client, token_client

pytestmark = pytest.mark.django_db


def _url(code: str) -> str:
    return f"/api/v1/wards/{code}/latest-vitals/"


def test_it_gives_each_bed_its_newest_readings(hospital: Hospital) -> None:
    newer = observation_for(hospital.a.patient, minutes_ago=0.1, value=88.0)
    response = session_client(hospital.clinician_a).get(_url(hospital.a.ward.code))
    assert response.status_code == 200
    beds = {bed["label"]: bed for bed in response.json()["beds"]}
    occupied = beds[hospital.a.bed.label]
    assert occupied["patient"] == str(hospital.a.patient.public_id)
    assert occupied["vitals"][newer.code]["value"] == 88.0
    assert beds[hospital.a.free_bed.label]["patient"] is None
    assert AccessLog.objects.filter(
        user=hospital.clinician_a, action="api.latest_vitals.retrieve"
    ).exists()


def test_it_hides_another_wards_vitals(hospital: Hospital) -> None:
    assert session_client(hospital.clinician_b).get(_url(hospital.a.ward.code)).status_code == 404
    assert token_client(hospital.token_a_read).get(_url(hospital.a.ward.code)).status_code == 200


def test_it_answers_a_full_ward_with_as_many_queries_as_one_bed(hospital: Hospital) -> None:
    client = session_client(hospital.clinician_a)
    with CaptureQueriesContext(connection) as one:
        client.get(_url(hospital.a.ward.code))
    for _ in range(12):
        admission = factories.admitted_patient(factories.bed(hospital.a.ward))
        observation_for(admission.patient)
    with CaptureQueriesContext(connection) as many:
        assert client.get(_url(hospital.a.ward.code)).status_code == 200
    assert len(many) == len(one)
