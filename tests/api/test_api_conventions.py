"""What holds for every records-API endpoint: replica reads, throttling, JSON bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from config import routers
from patients.api_access import PerCredentialThrottle
from tests.api.hospital import Hospital, session_client, token_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def replica_reads_seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Each read of a record's table, and whether it was allowed to go to a replica."""
    seen: list[tuple[str, bool]] = []
    original = routers.ReplicaRouter.db_for_read

    def spy(self: routers.ReplicaRouter, model: Any, **hints: object) -> str | None:
        if model._meta.app_label in {"patients", "monitoring", "alerts"}:
            seen.append((model._meta.label, routers._replica_reads.get()))
        return original(self, model, **hints)

    monkeypatch.setattr(routers.ReplicaRouter, "db_for_read", spy)
    return seen


def test_it_sends_the_reads_of_a_get_to_the_replica(
    hospital: Hospital, replica_reads_seen: list[tuple[str, bool]]
) -> None:
    client = session_client(hospital.clinician_a)
    replica_reads_seen.clear()
    client.get(f"/api/v1/patients/{hospital.a.patient.public_id}/")
    assert ("patients.Patient", True) in replica_reads_seen
    assert all(replica for _, replica in replica_reads_seen)


def test_it_keeps_the_reads_of_a_write_on_the_primary(
    hospital: Hospital, replica_reads_seen: list[tuple[str, bool]]
) -> None:
    client = session_client(hospital.clinician_a)
    replica_reads_seen.clear()
    response = client.post(f"/api/v1/alerts/{hospital.a.alert.public_id}/acknowledge/")
    assert response.status_code == 200
    assert ("alerts.Alert", False) in replica_reads_seen
    assert not any(replica for _, replica in replica_reads_seen)


@pytest.fixture
def three_per_minute() -> Iterator[None]:
    # DRF reads the rates once, into the class: set both, and restore both.
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "credential": "3/min"}
    saved = PerCredentialThrottle.THROTTLE_RATES
    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ):
        PerCredentialThrottle.THROTTLE_RATES = rates
        try:
            yield
        finally:
            PerCredentialThrottle.THROTTLE_RATES = saved


def test_it_throttles_a_token_over_its_rate_with_429(
    hospital: Hospital, three_per_minute: None
) -> None:
    client = token_client(hospital.token_a_read)
    statuses = [client.get("/api/v1/wards/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    response = client.get("/api/v1/wards/")
    assert response.json()["code"] == "throttled"
    assert int(response["Retry-After"]) > 0
    # Each credential has its own allowance.
    assert session_client(hospital.clinician_a).get("/api/v1/wards/").status_code == 200


def test_it_takes_json_bodies_only(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        "/api/v1/admissions/",
        {
            "patient": str(hospital.a.unadmitted.public_id),
            "bed": str(hospital.a.free_bed.public_id),
        },
    )  # form-encoded
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_it_answers_malformed_json_with_400(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        "/api/v1/admissions/", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
