"""``config.asgi:ingest_application`` served by a real uvicorn, as compose's ``ingest`` runs it:
device readings and the health probes, nothing a clinician or a browser could use."""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections.abc import Iterator

import httpx
import pytest
from django.utils import timezone

from monitoring.models import Observation
from monitoring.services import device_token_issue
from tests import factories
from tests.processes import asgi_serving, child_process_environment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def ingest_url(django_db_setup: None) -> Iterator[str]:
    """One server for the module (it reads the test database, which each test fills)."""
    with asgi_serving(
        "config.asgi:ingest_application",
        ready_path="/healthz",
        environment=child_process_environment(CELERY_BROKER_URL=""),
        server_program="uvicorn",
    ) as url:
        yield url


def test_it_stores_a_devices_readings(ingest_url: str) -> None:
    admission = factories.admitted_patient(factories.bed(factories.ward()))
    admission.admitted_at = timezone.now() - dt.timedelta(hours=1)
    admission.save(update_fields=["admitted_at"])
    token = device_token_issue(device=factories.device(admission.bed))
    observed_at = (timezone.now() - dt.timedelta(seconds=1)).isoformat()
    response = httpx.post(
        f"{ingest_url}/api/v1/ingest/",
        json={
            "message_id": "m-1",
            "observations": [
                {"code": "8867-4", "value": 71, "unit": "/min", "observed_at": observed_at}
            ],
        },
        headers={"Authorization": f"Device {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.json()["patient"] == str(admission.patient.public_id)
    stored = Observation.objects.get(patient=admission.patient)
    assert (stored.code, stored.value) == ("8867-4", 71.0)


def test_it_answers_the_probes(ingest_url: str) -> None:
    assert httpx.get(f"{ingest_url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{ingest_url}/readyz", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "path", ["/accounts/login/", "/wards/", "/admin/", "/api/v1/schema/", "/fhir/r4/Patient"]
)
def test_it_serves_no_page_api_or_admin(ingest_url: str, path: str) -> None:
    response = httpx.get(f"{ingest_url}{path}", timeout=10)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "/api/v1/ingest/" in response.json()["detail"]


def test_it_refuses_a_dashboard_websocket(ingest_url: str) -> None:
    handshake = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Origin": ingest_url,
    }
    response = httpx.get(f"{ingest_url}/ws/wards/any/", headers=handshake, timeout=10)
    # uvicorn here has no WebSocket library: the upgrade is never made (no 101), the request
    # is a plain GET the listener does not serve
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
