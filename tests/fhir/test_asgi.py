"""The FHIR endpoints through the ASGI application daphne serves (not just the test client)."""

from __future__ import annotations

import httpx
import pytest
from asgiref.sync import sync_to_async
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome

from config.asgi import application
from patients.api_access import api_token_issue
from patients.models import AccessLog
from tests.fhir.conftest import FHIR_JSON, T0, Hospital, reading

# The view runs in asgiref's worker thread, on its own connection: data must be committed.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]


@pytest.fixture
def token(hospital: Hospital) -> str:
    reading(hospital.patient, at=T0, device=hospital.device).save()
    return api_token_issue(user=hospital.clinician, name="EPR", scopes=["read"])[1]


async def test_it_answers_a_search_over_asgi(hospital: Hospital, token: str):
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        response = await client.get(
            "/fhir/Observation",
            params={"patient": f"Patient/{hospital.patient.public_id}", "code": "8867-4"},
            headers={"Authorization": f"Token {token}", "Accept": FHIR_JSON},
        )
        anonymous = await client.get(f"/fhir/Patient/{hospital.patient.public_id}")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert len(Bundle.model_validate(response.json()).entry or []) == 1
    assert anonymous.status_code == 401
    OperationOutcome.model_validate(anonymous.json())
    assert await sync_to_async(AccessLog.objects.count)() == 1
