"""Alerts through the API: the dashboard's own services, refusals as 409, the trail kept."""

from __future__ import annotations

import pytest

from alerts.models import Alert, AlertEvent
from patients.api_access import api_token_issue
from tests.api.hospital import Hospital, alert_for, session_client, threshold_rule, token_client

pytestmark = pytest.mark.django_db

ALERTS = "/api/v1/alerts/"


def _act(hospital: Hospital, alert: Alert, action: str) -> tuple[int, dict]:
    response = session_client(hospital.clinician_a).post(f"{ALERTS}{alert.public_id}/{action}/")
    return response.status_code, response.json()


def test_it_acknowledges_an_active_alert_with_who_and_when(hospital: Hospital) -> None:
    status, body = _act(hospital, hospital.a.alert, "acknowledge")
    assert status == 200
    assert body["state"] == "acknowledged"
    assert body["acknowledged_by"] == hospital.clinician_a.username
    event = AlertEvent.objects.get(alert=hospital.a.alert)
    assert (event.kind, event.by) == (AlertEvent.Kind.ACKNOWLEDGED, hospital.clinician_a)


def test_it_refuses_a_second_acknowledgement_with_409(hospital: Hospital) -> None:
    _act(hospital, hospital.a.alert, "acknowledge")
    status, body = _act(hospital, hospital.a.alert, "acknowledge")
    assert status == 409
    assert body["code"] == "not_active"


def test_it_resolves_an_open_alert_by_hand_once(hospital: Hospital) -> None:
    first_status, first = _act(hospital, hospital.a.alert, "resolve")
    second_status, second = _act(hospital, hospital.a.alert, "resolve")
    assert first_status == 200
    assert first["state"] == "resolved"
    assert first["resolved_at"] is not None
    assert second_status == 409
    assert second["code"] == "not_open"
    [event] = AlertEvent.objects.filter(alert=hospital.a.alert, kind=AlertEvent.Kind.RESOLVED)
    assert event.by == hospital.clinician_a


def test_it_resolves_an_acknowledged_alert(hospital: Hospital) -> None:
    _act(hospital, hospital.a.alert, "acknowledge")
    status, body = _act(hospital, hospital.a.alert, "resolve")
    assert status == 200
    assert body["state"] == "resolved"
    assert body["acknowledged_by"] == hospital.clinician_a.username


def test_it_lets_a_token_with_the_acknowledge_scope_act(hospital: Hospital) -> None:
    _, plain = api_token_issue(
        user=hospital.clinician_a, name="pager", scopes=["read", "acknowledge"]
    )
    response = token_client(plain).post(f"{ALERTS}{hospital.a.alert.public_id}/acknowledge/")
    assert response.status_code == 200


def test_it_filters_alerts_by_state_priority_ward_and_patient(hospital: Hospital) -> None:
    low = alert_for(
        hospital.a.admission,
        threshold_rule(hospital.a.ward, name="HR", code="8867-4", low=40.0, priority="low"),
        state=Alert.State.ACKNOWLEDGED,
    )
    client = session_client(hospital.admin)

    def ids(**params: str) -> set[str]:
        response = client.get(ALERTS, params)
        assert response.status_code == 200
        return {row["id"] for row in response.json()["results"]}

    a_alert, b_alert = str(hospital.a.alert.public_id), str(hospital.b.alert.public_id)
    assert ids(state="acknowledged") == {str(low.public_id)}
    assert ids(priority="high") == {a_alert, b_alert}
    assert ids(ward=hospital.b.ward.code) == {b_alert}
    assert ids(patient=str(hospital.a.patient.public_id)) == {a_alert, str(low.public_id)}
    assert client.get(ALERTS, {"state": "snoozed"}).status_code == 400
