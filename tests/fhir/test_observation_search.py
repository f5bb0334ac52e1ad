"""GET /fhir/Observation?patient=…: vital-signs Observations in a searchset Bundle."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation as FhirObservation
from fhir.resources.R4B.operationoutcome import OperationOutcome

from monitoring.models import Observation
from monitoring.services import device_token_issue, observation_enter
from patients.api_access import api_token_issue
from patients.models import AccessLog
from tests.fhir.conftest import T0, Hospital, fhir, reading, readings

pytestmark = pytest.mark.django_db

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def search(client: Client, hospital: Hospital, query: str = "", **headers: Any) -> Any:
    return client.get(f"/fhir/Observation?patient={hospital.patient.public_id}{query}", **headers)


def resources(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in body.get("entry", [])]


def values(body: dict[str, Any]) -> list[float]:
    return [resource["valueQuantity"]["value"] for resource in resources(body)]


def link(body: dict[str, Any], relation: str) -> str | None:
    return next((x["url"] for x in body["link"] if x["relation"] == relation), None)


def follow(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def codings(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in resource["code"]["coding"]}


# --- resources ----------------------------------------------------------------------------


def test_it_returns_heart_rate_as_a_vital_signs_observation(
    clinician_client: Client, hospital: Hospital
):
    reading(hospital.patient, at=T0, value=72, device=hospital.device).save()

    body = fhir(search(clinician_client, hospital), Bundle)

    assert body["type"] == "searchset"
    (entry,) = body["entry"]
    resource = entry["resource"]
    FhirObservation.model_validate(resource)
    assert entry["fullUrl"] == f"http://testserver/fhir/Observation/{resource['id']}"
    assert entry["search"] == {"mode": "match"}
    assert resource["status"] == "final"
    assert resource["category"][0]["coding"][0]["system"] == CATEGORY
    assert resource["category"][0]["coding"][0]["code"] == "vital-signs"
    assert resource["meta"]["profile"] == ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]
    assert codings(resource) == {(LOINC, "8867-4"), (MDC, "147842")}
    mdc = next(c for c in resource["code"]["coding"] if c["system"] == MDC)
    assert mdc["display"] == "MDC_ECG_HEART_RATE"
    assert resource["valueQuantity"] == {
        "value": 72.0,
        "unit": "/min",
        "system": UCUM,
        "code": "/min",
    }
    assert resource["effectiveDateTime"] == "2026-11-20T08:00:00Z"
    assert resource["subject"] == {"reference": f"Patient/{hospital.patient.public_id}"}
    assert resource["device"] == {"reference": f"Device/{hospital.device.public_id}"}
    assert "performer" not in resource
    assert "total" not in body


def test_it_codes_spo2_with_pulse_oximetry_the_base_profile_code_and_mdc(
    clinician_client: Client, hospital: Hospital
):
    reading(hospital.patient, at=T0, code="59408-5", value=94, device=hospital.device).save()

    (resource,) = resources(fhir(search(clinician_client, hospital), Bundle))

    assert codings(resource) == {(LOINC, "59408-5"), (LOINC, "2708-6"), (MDC, "150456")}
    assert resource["valueQuantity"]["code"] == "%"
    assert resource["valueQuantity"]["system"] == UCUM


@pytest.mark.parametrize(
    "code, mdc, unit",
    [
        ("9279-1", "151562", "/min"),
        ("8480-6", "150021", "mm[Hg]"),
        ("8462-4", "150022", "mm[Hg]"),
        ("8478-0", "150023", "mm[Hg]"),
        ("8310-5", "150364", "Cel"),
    ],
)
def test_it_codes_every_device_vital_with_loinc_mdc_and_ucum(
    clinician_client: Client, hospital: Hospital, code: str, mdc: str, unit: str
):
    reading(hospital.patient, at=T0, code=code, value=37, device=hospital.device).save()

    (resource,) = resources(fhir(search(clinician_client, hospital), Bundle))

    assert codings(resource) == {(LOINC, code), (MDC, mdc)}
    assert resource["valueQuantity"]["code"] == unit


def test_it_returns_a_nurse_entered_acvpu_as_a_local_survey_observation(
    clinician_client: Client, hospital: Hospital
):
    nurse = hospital.clinician
    nurse.first_name, nurse.last_name = "Nina", "Nurse"
    nurse.save(update_fields=["first_name", "last_name"])
    observation_enter(patient=hospital.patient, code="local-acvpu", value=2, user=nurse)

    (resource,) = resources(fhir(search(clinician_client, hospital), Bundle))

    assert resource["category"][0]["coding"][0]["code"] == "survey"
    assert codings(resource) == {("urn:portal:local", "local-acvpu")}
    assert "meta" not in resource
    assert "device" not in resource
    assert resource["performer"] == [{"type": "Practitioner", "display": "Nina Nurse"}]
    assert resource["valueQuantity"] == {
        "value": 2.0,
        "unit": "{score}",
        "system": UCUM,
        "code": "{score}",
    }


def test_it_returns_artifacts_tagged_as_unreliable(clinician_client: Client, hospital: Hospital):
    reading(hospital.patient, at=T0, device=hospital.device, artifact=True).save()

    (resource,) = resources(fhir(search(clinician_client, hospital), Bundle))

    assert resource["meta"]["tag"][0]["code"] == "device-artifact"
    assert "unreliable" in resource["note"][0]["text"]


def test_it_gives_observations_opaque_stable_ids(clinician_client: Client, hospital: Hospital):
    saved = readings(hospital.patient, hospital.device, 3)

    first = resources(fhir(search(clinician_client, hospital), Bundle))
    again = resources(fhir(search(clinician_client, hospital), Bundle))

    ids = [r["id"] for r in first]
    assert ids == [r["id"] for r in again]
    assert len(set(ids)) == 3
    for observation, fhir_id in zip(saved, ids, strict=True):
        assert len(fhir_id) == 26
        assert fhir_id.isalnum() and fhir_id.islower()
        assert str(observation.pk) not in fhir_id


# --- paging -------------------------------------------------------------------------------


def test_it_pages_through_every_reading_once_in_order(clinician_client: Client, hospital: Hospital):
    # Three readings share a timestamp, so the pk must break the tie across a page boundary.
    moments = [T0, T0 + dt.timedelta(seconds=1)] + [T0 + dt.timedelta(seconds=2)] * 3
    moments += [T0 + dt.timedelta(seconds=3), T0 + dt.timedelta(seconds=4)]
    saved = Observation.objects.bulk_create(
        reading(hospital.patient, at=at, value=i, device=hospital.device)
        for i, at in enumerate(reversed(moments))
    )
    expected = [o.value for o in sorted(saved, key=lambda o: (o.observed_at, o.pk))]

    pages = []
    url: str | None = f"/fhir/Observation?patient=Patient/{hospital.patient.public_id}&_count=3"
    while url is not None:
        body = fhir(clinician_client.get(url), Bundle)
        pages.append(values(body))
        assert link(body, "self") == f"http://testserver{url}"
        next_url = link(body, "next")
        url = follow(next_url) if next_url else None

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [value for page in pages for value in page] == expected
    assert len(set(expected)) == 7


def test_it_keeps_the_filters_in_the_next_link(clinician_client: Client, hospital: Hospital):
    readings(hospital.patient, hospital.device, 5)
    readings(hospital.patient, hospital.device, 5, code="59408-5", value=95)

    body = fhir(
        search(clinician_client, hospital, "&code=8867-4&_count=2&date=ge2026-11-20"), Bundle
    )
    query = parse_qs(urlsplit(link(body, "next") or "").query)

    assert query["code"] == ["8867-4"]
    assert query["date"] == ["ge2026-11-20"]
    assert query["_count"] == ["2"]
    assert query["patient"] == [str(hospital.patient.public_id)]
    second = fhir(clinician_client.get(follow(link(body, "next") or "")), Bundle)
    assert {codings(r) >= {(LOINC, "8867-4")} for r in resources(second)} == {True}


def test_it_pages_50_by_default_and_at_most_1000(clinician_client: Client, hospital: Hospital):
    readings(hospital.patient, hospital.device, 1001, start=T0 - dt.timedelta(days=1))

    default = fhir(search(clinician_client, hospital), Bundle)
    capped = fhir(search(clinician_client, hospital, "&_count=5000"), Bundle)

    assert len(default["entry"]) == 50
    assert len(capped["entry"]) == 1000
    assert parse_qs(urlsplit(link(capped, "next") or "").query)["_count"] == ["1000"]


def test_it_refuses_a_cursor_it_did_not_issue(clinician_client: Client, hospital: Hospital):
    response = search(clinician_client, hospital, "&_cursor=WyIyMDI2Il0:forged")

    body = fhir(response, OperationOutcome, status=400)
    assert "_cursor" in body["issue"][0]["diagnostics"]


def test_it_runs_the_same_queries_for_1_or_200_readings(
    clinician_client: Client, hospital: Hospital
):
    reading(hospital.patient, at=T0, device=hospital.device).save()
    observation_enter(
        patient=hospital.patient, code="local-acvpu", value=0, user=hospital.clinician
    )
    with CaptureQueriesContext(connection) as few:
        assert len(fhir(search(clinician_client, hospital, "&_count=1000"), Bundle)["entry"]) == 2

    readings(hospital.patient, hospital.device, 198, start=T0 + dt.timedelta(hours=1))
    with CaptureQueriesContext(connection) as many:
        assert len(fhir(search(clinician_client, hospital, "&_count=1000"), Bundle)["entry"]) == 200

    assert len(many) == len(few)
    # Session and user; the user's permissions (user, then group); the patient; one page of
    # observations with device and staff; the audit row; the session save.
    assert len([q for q in few.captured_queries if "SAVEPOINT" not in q["sql"]]) == 8


# --- filters ------------------------------------------------------------------------------


@pytest.fixture
def day_of_readings(hospital: Hospital) -> None:
    # Heart rate every hour of 2026-11-20 (value = hour); SpO2 at noon.
    Observation.objects.bulk_create(
        reading(hospital.patient, at=T0.replace(hour=h), value=h, device=hospital.device)
        for h in range(24)
    )
    reading(
        hospital.patient, at=T0.replace(hour=12), code="59408-5", value=97, device=hospital.device
    ).save()


@pytest.mark.usefixtures("day_of_readings")
@pytest.mark.parametrize(
    "query, expected",
    [
        ("&date=ge2026-11-20T20:00:00Z", [20, 21, 22, 23]),
        ("&date=gt2026-11-20T20:00:00Z", [21, 22, 23]),
        ("&date=le2026-11-20T02:00:00Z", [0, 1, 2]),
        ("&date=lt2026-11-20T02:00:00Z", [0, 1]),
        ("&date=ge2026-11-20T05:00:00Z&date=le2026-11-20T07:00:00Z", [5, 6, 7]),
        ("&date=ge2026-11-20T05:00:00%2B01:00&date=lt2026-11-20T07:00:00%2B01:00", [4, 5]),
        # An unencoded "+" arrives as a space; it is read as the offset it was meant as.
        ("&date=ge2026-11-20T05:00:00+01:00&date=lt2026-11-20T07:00:00+01:00", [4, 5]),
        ("&date=2026-11-20T03:00Z", [3]),
        ("&date=eq2026-11-20T03:00:00.000Z", [3]),
        ("&date=2026-11-20", list(range(24))),
        ("&date=2026-11-21", []),
        ("&date=lt2026-11", []),
        ("&date=ge2026-12-01", []),
        ("&date=le2026", list(range(24))),
    ],
)
def test_it_filters_by_date(
    clinician_client: Client, hospital: Hospital, query: str, expected: list[int]
):
    body = fhir(search(clinician_client, hospital, "&code=8867-4" + query), Bundle)

    assert values(body) == expected


@pytest.mark.usefixtures("day_of_readings")
@pytest.mark.parametrize(
    "code, expected_codes",
    [
        ("8867-4", {"8867-4"}),
        ("http://loinc.org|8867-4", {"8867-4"}),
        ("http://loinc.org|2708-6", {"59408-5"}),
        ("urn:iso:std:iso:11073:10101|150456", {"59408-5"}),
        ("8867-4,59408-5", {"8867-4", "59408-5"}),
        ("http://loinc.org|", {"8867-4", "59408-5"}),
        ("http://snomed.info/sct|8867-4", set()),
        ("|8867-4", set()),
        ("9279-1", set()),
        ("does-not-exist", set()),
    ],
)
def test_it_filters_by_code(
    clinician_client: Client, hospital: Hospital, code: str, expected_codes: set[str]
):
    body = fhir(search(clinician_client, hospital, f"&code={code.replace('|', '%7C')}"), Bundle)

    found = {r["code"]["coding"][0]["code"] for r in resources(body)}
    assert found == expected_codes


def test_it_filters_by_category(clinician_client: Client, hospital: Hospital):
    reading(hospital.patient, at=T0, device=hospital.device).save()
    observation_enter(
        patient=hospital.patient, code="local-supplemental-o2", value=1, user=hospital.clinician
    )

    vital = fhir(search(clinician_client, hospital, "&category=vital-signs"), Bundle)
    survey = fhir(search(clinician_client, hospital, f"&category={CATEGORY}%7Csurvey"), Bundle)

    assert [r["code"]["coding"][0]["code"] for r in resources(vital)] == ["8867-4"]
    assert [r["code"]["coding"][0]["code"] for r in resources(survey)] == ["local-supplemental-o2"]


def test_it_accepts_subject_as_the_patient(clinician_client: Client, hospital: Hospital):
    reading(hospital.patient, at=T0, device=hospital.device).save()

    response = clinician_client.get(
        f"/fhir/Observation?subject=Patient/{hospital.patient.public_id}"
    )

    assert len(fhir(response, Bundle)["entry"]) == 1


def test_it_leaves_out_other_patients_readings(clinician_client: Client, hospital: Hospital):
    reading(hospital.patient, at=T0, value=1, device=hospital.device).save()
    reading(hospital.other_patient, at=T0, value=2, device=hospital.device).save()
    reading(None, at=T0, value=3, device=hospital.device).save()

    assert values(fhir(search(clinician_client, hospital), Bundle)) == [1]


@pytest.mark.parametrize(
    "query, issue_code",
    [
        ("&date=yesterday", "invalid"),
        ("&date=ge2026-13-01", "invalid"),
        ("&date=ge2026-11-20T25:00:00Z", "invalid"),
        ("&date=ge2026-11-20T10:00:00", "invalid"),
        ("&date=sa2026-11-20", "not-supported"),
        ("&date=", "invalid"),
        ("&_count=0", "invalid"),
        ("&_count=ten", "invalid"),
        ("&code=", "invalid"),
        ("&_sort=-date", "not-supported"),
        ("&value-quantity=gt100", "not-supported"),
        ("&code:text=heart", "not-supported"),
        ("&subject=Patient/x", "invalid"),
    ],
)
def test_it_answers_an_invalid_search_with_400(
    clinician_client: Client, hospital: Hospital, query: str, issue_code: str
):
    body = fhir(search(clinician_client, hospital, query), OperationOutcome, status=400)

    assert body["issue"][0]["code"] == issue_code
    assert not AccessLog.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Observation",
        "/fhir/Observation?code=8867-4",
        "/fhir/Observation?patient=not-a-uuid",
        "/fhir/Observation?patient=Encounter/0d8f7f8e-2f1b-4c4e-9a51-0d2f1c2a3b4c",
    ],
)
def test_it_needs_one_valid_patient(clinician_client: Client, path: str):
    fhir(clinician_client.get(path), OperationOutcome, status=400)


# --- access -------------------------------------------------------------------------------


def test_it_hides_another_wards_patient_exactly_like_an_unknown_one(
    clinician_client: Client, hospital: Hospital
):
    reading(hospital.other_patient, at=T0, device=hospital.device).save()

    other = clinician_client.get(f"/fhir/Observation?patient={hospital.other_patient.public_id}")
    unknown = clinician_client.get(f"/fhir/Observation?patient={uuid.uuid4()}")

    body = fhir(other, OperationOutcome, status=404)
    assert body == fhir(unknown, OperationOutcome, status=404)
    assert not AccessLog.objects.exists()


def test_it_shows_an_administrator_any_patients_readings(client: Client, hospital: Hospital):
    reading(hospital.other_patient, at=T0, device=hospital.device).save()
    client.force_login(hospital.administrator)

    response = client.get(f"/fhir/Observation?patient={hospital.other_patient.public_id}")

    assert len(fhir(response, Bundle)["entry"]) == 1


def test_it_answers_401_without_credentials(client: Client, hospital: Hospital):
    body = fhir(search(client, hospital), OperationOutcome, status=401)

    assert body["issue"][0]["code"] == "login"


def test_it_refuses_a_device_credential(client: Client, hospital: Hospital):
    token = device_token_issue(device=hospital.device)

    response = search(client, hospital, HTTP_AUTHORIZATION=f"Device {token}")

    fhir(response, OperationOutcome, status=401)


def test_it_answers_an_api_token_with_the_read_scope(client: Client, hospital: Hospital):
    reading(hospital.patient, at=T0, device=hospital.device).save()
    token, plain = api_token_issue(user=hospital.clinician, name="EPR", scopes=["read"])

    response = search(client, hospital, HTTP_AUTHORIZATION=f"Token {plain}")

    assert len(fhir(response, Bundle)["entry"]) == 1
    assert AccessLog.objects.get().token == token


def test_it_records_one_access_log_row_per_search(clinician_client: Client, hospital: Hospital):
    readings(hospital.patient, hospital.device, 3)

    fhir(search(clinician_client, hospital, "&code=8867-4"), Bundle)

    log = AccessLog.objects.get()
    assert log.action == "fhir.observation.search"
    assert log.patient == hospital.patient
    assert log.user == hospital.clinician
    assert log.resource == f"Observation?patient={hospital.patient.public_id}&code=8867-4"


def test_it_answers_format_json(clinician_client: Client, hospital: Hospital):
    response = search(clinician_client, hospital, "&_format=json", HTTP_ACCEPT="application/xml")

    fhir(response, Bundle)


def test_it_reads_the_patient_and_readings_from_the_replica(
    clinician_client: Client, hospital: Hospital, replica_reads: set[str]
):
    reading(hospital.patient, at=T0, device=hospital.device).save()

    fhir(search(clinician_client, hospital), Bundle)

    assert {"Patient", "Observation"} <= replica_reads
