"""Observations: one patient's readings page by page, their trend, and staff-entered values."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from monitoring.models import Observation
from tests import factories
from tests.api.hospital import Hospital, observation_for, session_client

pytestmark = pytest.mark.django_db

OBSERVATIONS = "/api/v1/observations/"
TREND = "/api/v1/observations/trend/"
STAFF = "/api/v1/observations/staff-entered/"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def test_it_pages_readings_newest_first_with_ties_broken_by_insertion(hospital: Hospital) -> None:
    patient = hospital.a.patient
    at = timezone.now() - dt.timedelta(minutes=10)
    same_instant = [
        Observation.objects.create(
            patient=patient,
            device=hospital.a.device,
            code="8867-4",
            value=60 + i,
            unit="/min",
            observed_at=at,
            received_at=at,
        )
        for i in range(5)
    ]
    client = session_client(hospital.clinician_a)
    seen: list[float] = []
    url: str | None = f"{OBSERVATIONS}?patient={patient.public_id}&code=8867-4&page_size=2"
    while url:
        body = client.get(url).json()
        seen += [row["value"] for row in body["results"]]
        url = body["next"]
    # The fixture's own reading (a minute ago) first, then the five of one instant, newest
    # inserted first, each exactly once across the pages.
    assert seen == [72.0] + [o.value for o in reversed(same_instant)]


def test_it_filters_readings_by_code_and_time_range(hospital: Hospital) -> None:
    patient = hospital.a.patient
    now = timezone.now()
    observation_for(patient, minutes_ago=120, code="59408-5", value=95, unit="%")
    inside = observation_for(patient, minutes_ago=60, code="59408-5", value=94, unit="%")
    response = session_client(hospital.clinician_a).get(
        OBSERVATIONS,
        {
            "patient": str(patient.public_id),
            "code": "59408-5",
            "from": _iso(now - dt.timedelta(minutes=90)),
            "to": _iso(now - dt.timedelta(minutes=30)),
        },
    )
    assert response.status_code == 200
    assert [row["value"] for row in response.json()["results"]] == [inside.value]


def test_it_refuses_a_time_without_its_utc_offset(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).get(
        OBSERVATIONS, {"patient": str(hospital.a.patient.public_id), "from": "2026-11-21T10:00:00"}
    )
    assert response.status_code == 400
    assert "from" in response.json()["fields"]


def test_it_asks_a_clinician_to_name_the_patient(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).get(OBSERVATIONS)
    assert response.status_code == 400
    assert response.json()["fields"] == {"patient": ["Name the patient."]}


def test_it_lets_an_administrator_read_readings_without_a_patient(hospital: Hospital) -> None:
    unassigned = observation_for(None, device=hospital.a.device, value=55)
    response = session_client(hospital.admin).get(OBSERVATIONS, {"code": "8867-4"})
    values = {(row["patient"], row["value"]) for row in response.json()["results"]}
    assert (None, unassigned.value) in values


def test_it_aggregates_the_trend_per_code_and_bucket(hospital: Hospital) -> None:
    patient = factories.admitted_patient(factories.bed(hospital.a.ward)).patient
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
    for minutes, value in [(1, 60), (2, 70), (3, 95), (65, 100), (66, 110)]:
        at = start + dt.timedelta(minutes=minutes)
        Observation.objects.create(
            patient=patient,
            device=hospital.a.device,
            code="8867-4",
            value=value,
            unit="/min",
            observed_at=at,
            received_at=at,
        )
    at = start + dt.timedelta(minutes=2)
    Observation.objects.create(  # an artifact is left out of the trend
        patient=patient,
        device=hospital.a.device,
        code="8867-4",
        value=300,
        unit="/min",
        observed_at=at,
        received_at=at,
        artifact=True,
    )
    response = session_client(hospital.clinician_a).get(
        TREND,
        {
            "patient": str(patient.public_id),
            "code": "8867-4",
            "from": _iso(start),
            "to": _iso(start + dt.timedelta(hours=2)),
            "bucket": 3600,
        },
    )
    assert response.status_code == 200
    [series] = response.json()["series"]
    assert series["code"] == "8867-4"
    assert series["unit"] == "/min"
    assert [(p["min"], p["mean"], p["max"], p["count"]) for p in series["points"]] == [
        (60.0, 75.0, 95.0, 3),
        (100.0, 105.0, 110.0, 2),
    ]
    assert series["points"][0]["at"] == _iso(start)


def test_it_refuses_a_trend_of_too_many_buckets(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).get(
        TREND,
        {
            "patient": str(hospital.a.patient.public_id),
            "from": "2020-01-01T00:00:00Z",
            "to": "2026-01-01T00:00:00Z",
            "bucket": 1,
        },
    )
    assert response.status_code == 400
    assert "bucket" in response.json()["fields"]


def test_it_records_a_staff_entered_observation(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).post(
        STAFF,
        {"patient": str(hospital.a.patient.public_id), "code": "local-supplemental-o2", "value": 1},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["source"] == "staff"
    stored = Observation.objects.get(code="local-supplemental-o2")
    assert stored.entered_by == hospital.clinician_a
    assert stored.patient == hospital.a.patient


def test_it_answers_an_implausible_staff_value_with_400(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).post(
        STAFF,
        {"patient": str(hospital.a.patient.public_id), "code": "local-acvpu", "value": 7},
        format="json",
    )
    assert response.status_code == 400
    assert "value" in response.json()["fields"]
    assert not Observation.objects.filter(code="local-acvpu").exists()


def test_it_refuses_a_device_vital_entered_by_staff(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).post(
        STAFF,
        {"patient": str(hospital.a.patient.public_id), "code": "8867-4", "value": 70},
        format="json",
    )
    assert response.status_code == 400
    assert "code" in response.json()["fields"]


def test_it_refuses_a_staff_observation_from_the_future(hospital: Hospital) -> None:
    response = session_client(hospital.clinician_a).post(
        STAFF,
        {
            "patient": str(hospital.a.patient.public_id),
            "code": "local-acvpu",
            "value": 0,
            "observed_at": _iso(timezone.now() + dt.timedelta(hours=1)),
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {"observed_at": ["The observation time is in the future."]}


@pytest.mark.parametrize(
    "times",
    [
        {"from": "0001-01-01T00:00:00+05:00"},
        {"to": "9999-12-31T23:59:59-05:00"},
        {"to": "0001-01-01T01:00:00Z"},
        {"from": "0001-01-01T00:00:00Z", "to": "0001-01-01T01:00:00Z"},
        {"from": "9999-12-31T22:00:00Z", "to": "9999-12-31T23:00:00Z"},
    ],
)
def test_it_answers_times_at_the_ends_of_the_calendar_without_failing(
    hospital: Hospital, times: dict[str, str]
) -> None:
    client = session_client(hospital.clinician_a)
    patient = str(hospital.a.patient.public_id)
    for url in (OBSERVATIONS, TREND, f"/api/v1/patients/{patient}/news2/"):
        response = client.get(url, {"patient": patient, **times})
        assert response.status_code in {200, 400}, (url, response.content)
