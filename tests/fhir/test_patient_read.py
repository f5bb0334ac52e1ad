"""GET /fhir/Patient/<public id>."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client, override_settings
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient as FhirPatient

from monitoring.services import device_token_issue
from patients.api_access import PerCredentialThrottle, api_token_issue, api_token_revoke
from patients.models import AccessLog, ApiToken
from patients.services import admission_discharge
from tests.fhir.conftest import FHIR_JSON, Hospital, fhir

pytestmark = pytest.mark.django_db


def url(public_id: object) -> str:
    return f"/fhir/Patient/{public_id}"


def test_it_returns_the_patient_as_a_fhir_patient(clinician_client: Client, hospital: Hospital):
    body = fhir(clinician_client.get(url(hospital.patient.public_id)), FhirPatient)

    assert body["id"] == str(hospital.patient.public_id)
    assert body["identifier"][0]["system"] == "urn:portal:mrn"
    assert body["identifier"][0]["value"] == hospital.patient.mrn
    assert body["identifier"][0]["type"]["coding"][0]["code"] == "MR"
    assert body["name"] == [{"use": "official", "family": "Ash", "given": ["Alice"]}]
    assert body["birthDate"] == "1941-03-09"
    assert body["gender"] == "female"


@override_settings(FHIR_MRN_SYSTEM="urn:oid:1.2.826.0.1.3680043.9.7")
def test_it_names_the_configured_mrn_system(clinician_client: Client, hospital: Hospital):
    body = fhir(clinician_client.get(url(hospital.patient.public_id)), FhirPatient)

    assert body["identifier"][0]["system"] == "urn:oid:1.2.826.0.1.3680043.9.7"


def test_it_hides_another_wards_patient_exactly_like_an_unknown_one(
    clinician_client: Client, hospital: Hospital
):
    other = clinician_client.get(url(hospital.other_patient.public_id))
    unknown = clinician_client.get(url(uuid.uuid4()))

    other_body = fhir(other, OperationOutcome, status=404)
    assert other_body == fhir(unknown, OperationOutcome, status=404)
    assert other_body["issue"][0]["code"] == "not-found"
    assert not AccessLog.objects.exists()


def test_it_hides_a_patient_discharged_from_the_clinicians_ward(
    clinician_client: Client, hospital: Hospital
):
    admission_discharge(admission=hospital.patient.admissions.get())

    fhir(clinician_client.get(url(hospital.patient.public_id)), OperationOutcome, status=404)


def test_it_answers_a_malformed_id_with_404(clinician_client: Client, hospital: Hospital):
    fhir(clinician_client.get(url("12345")), OperationOutcome, status=404)


def test_it_shows_an_administrator_every_patient(client: Client, hospital: Hospital):
    client.force_login(hospital.administrator)

    body = fhir(client.get(url(hospital.other_patient.public_id)), FhirPatient)

    assert body["id"] == str(hospital.other_patient.public_id)


def test_it_answers_401_without_credentials(client: Client, hospital: Hospital):
    response = client.get(url(hospital.patient.public_id))

    body = fhir(response, OperationOutcome, status=401)
    assert body["issue"][0]["code"] == "login"
    assert response["WWW-Authenticate"] == "Token"


def test_it_refuses_a_device_credential(client: Client, hospital: Hospital):
    token = device_token_issue(device=hospital.device)

    response = client.get(url(hospital.patient.public_id), HTTP_AUTHORIZATION=f"Device {token}")

    fhir(response, OperationOutcome, status=401)


def test_it_accepts_an_api_token_with_the_read_scope(client: Client, hospital: Hospital):
    token, plain = api_token_issue(user=hospital.clinician, name="EPR", scopes=["read"])

    response = client.get(url(hospital.patient.public_id), HTTP_AUTHORIZATION=f"Token {plain}")

    fhir(response, FhirPatient)
    log = AccessLog.objects.get()
    assert (log.token, log.user, log.patient) == (token, hospital.clinician, hospital.patient)


def test_it_refuses_a_token_without_the_read_scope(client: Client, hospital: Hospital):
    _, plain = api_token_issue(user=hospital.clinician, name="Pager", scopes=["acknowledge"])

    response = client.get(url(hospital.patient.public_id), HTTP_AUTHORIZATION=f"Token {plain}")

    body = fhir(response, OperationOutcome, status=403)
    assert body["issue"][0]["code"] == "forbidden"


def test_it_refuses_a_revoked_token(client: Client, hospital: Hospital):
    token, plain = api_token_issue(user=hospital.clinician, name="EPR", scopes=["read"])
    api_token_revoke(token=token)

    response = client.get(url(hospital.patient.public_id), HTTP_AUTHORIZATION=f"Token {plain}")

    fhir(response, OperationOutcome, status=401)


def test_it_keeps_a_token_to_its_users_wards(client: Client, hospital: Hospital):
    _, plain = api_token_issue(user=hospital.clinician, name="EPR", scopes=[ApiToken.Scope.READ])

    response = client.get(
        url(hospital.other_patient.public_id), HTTP_AUTHORIZATION=f"Token {plain}"
    )

    fhir(response, OperationOutcome, status=404)


def test_it_records_each_read_in_the_access_log(clinician_client: Client, hospital: Hospital):
    fhir(
        clinician_client.get(url(hospital.patient.public_id), REMOTE_ADDR="10.1.2.3"),
        FhirPatient,
    )

    log = AccessLog.objects.get()
    assert log.action == "fhir.patient.read"
    assert log.user == hospital.clinician
    assert log.patient == hospital.patient
    assert log.resource == f"Patient/{hospital.patient.public_id}"
    assert log.address == "10.1.2.3"


@pytest.mark.parametrize(
    "query, accept",
    [
        ("", ""),
        ("", "application/json"),
        ("", "application/fhir+json"),
        ("", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("?_format=json", "application/xml"),
        ("?_format=application/fhir%2Bjson", ""),
    ],
)
def test_it_answers_fhir_json_to_json_requests(
    clinician_client: Client, hospital: Hospital, query: str, accept: str
):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = clinician_client.get(url(hospital.patient.public_id) + query, **headers)

    fhir(response, FhirPatient)
    assert response["Content-Type"] == f"{FHIR_JSON}; charset=utf-8"


@pytest.mark.parametrize(
    "query, accept",
    [("", "application/fhir+xml"), ("?_format=xml", ""), ("", "application/json;q=0")],
)
def test_it_answers_406_to_anything_but_json(
    clinician_client: Client, hospital: Hospital, query: str, accept: str
):
    headers = {"HTTP_ACCEPT": accept} if accept else {}
    response = clinician_client.get(url(hospital.patient.public_id) + query, **headers)

    body = fhir(response, OperationOutcome, status=406)
    assert body["issue"][0]["code"] == "not-supported"
    assert not AccessLog.objects.exists()


def test_it_answers_an_unknown_path_with_an_operation_outcome(clinician_client: Client):
    for path in ("/fhir/", "/fhir/Encounter/1", "/fhir/Observation/abc"):
        fhir(clinician_client.get(path), OperationOutcome, status=404)


def test_it_refuses_writes(client: Client, hospital: Hospital):
    _, plain = api_token_issue(user=hospital.clinician, name="EPR", scopes=["read", "write"])

    response = client.generic(
        "PUT",
        url(hospital.patient.public_id),
        b"{}",
        content_type=FHIR_JSON,
        HTTP_AUTHORIZATION=f"Token {plain}",
    )

    fhir(response, OperationOutcome, status=405)


def test_it_describes_itself_in_a_capability_statement(clinician_client: Client):
    body = fhir(clinician_client.get("/fhir/metadata"), CapabilityStatement)

    resources = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert resources["Patient"]["interaction"] == [{"code": "read"}]
    assert resources["Observation"]["interaction"] == [{"code": "search-type"}]


def test_it_throttles_per_credential(
    clinician_client: Client, hospital: Hospital, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(PerCredentialThrottle, "THROTTLE_RATES", {"credential": "2/min"})
    for _ in range(2):
        fhir(clinician_client.get(url(hospital.patient.public_id)), FhirPatient)
    response = clinician_client.get(url(hospital.patient.public_id))

    body = fhir(response, OperationOutcome, status=429)
    assert body["issue"][0]["code"] == "throttled"
    assert "Retry-After" in response


def test_it_reads_the_patient_from_the_replica(
    clinician_client: Client, hospital: Hospital, replica_reads: set[str]
):
    fhir(clinician_client.get(url(hospital.patient.public_id)), FhirPatient)

    assert "Patient" in replica_reads


def test_it_refuses_options(clinician_client: Client, hospital: Hospital):
    response = clinician_client.options(url(hospital.patient.public_id))

    fhir(response, OperationOutcome, status=405)
