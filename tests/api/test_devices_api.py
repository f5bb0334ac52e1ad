"""Devices and their credentials: administrators only; a token is shown once, never cached."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from monitoring.models import Device, token_digest
from tests.api.hospital import Hospital, session_client, token_client

pytestmark = pytest.mark.django_db


def _token_url(device: Device) -> str:
    return f"/api/v1/devices/{device.public_id}/token/"


def test_it_issues_a_token_once_and_forbids_caching_it(hospital: Hospital) -> None:
    device = hospital.a.device
    response = session_client(hospital.admin).post(_token_url(device))
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    token = response.json()["token"]
    assert token.startswith(response.json()["token_hint"])
    device.refresh_from_db()
    assert device.token_digest == token_digest(token)
    # Never shown again.
    detail = session_client(hospital.admin).get(f"/api/v1/devices/{device.public_id}/").json()
    assert token not in str(detail)
    assert detail["has_token"] is True


def test_it_rotates_a_token_so_the_old_one_stops_working(hospital: Hospital) -> None:
    device = hospital.a.device
    old = hospital.a.device_token
    new = session_client(hospital.admin).post(_token_url(device)).json()["token"]
    device.refresh_from_db()
    assert new != old
    assert device.token_digest == token_digest(new)
    assert not Device.objects.filter(token_digest=token_digest(old)).exists()


def test_it_revokes_a_token(hospital: Hospital) -> None:
    device = hospital.a.device
    response = session_client(hospital.admin).delete(_token_url(device))
    assert response.status_code == 204
    device.refresh_from_db()
    assert device.token_digest is None
    assert session_client(hospital.admin).delete(_token_url(device)).status_code == 204


def test_it_refuses_a_device_credential_with_401(hospital: Hospital) -> None:
    response = token_client(hospital.a.device_token, scheme="Device").get("/api/v1/devices/")
    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
    assert "ingest" in response.json()["detail"]
    assert response["WWW-Authenticate"] == "Token"


def test_it_answers_anonymous_callers_with_401_and_the_token_challenge(hospital: Hospital) -> None:
    response = APIClient().get("/api/v1/wards/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"] == "Token"
