"""Alert rules: every clinician reads them, administrators change them, checked like the admin."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry

from alerts.models import AlertRule
from tests.api.hospital import Hospital, session_client

pytestmark = pytest.mark.django_db

RULES = "/api/v1/alert-rules/"


def test_it_adds_a_ward_rule_and_logs_it_in_the_rules_history(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        RULES,
        {
            "name": "RR high",
            "code": "9279-1",
            "high": 30,
            "clear_high": 28,
            "priority": "medium",
            "sustain_seconds": 30,
            "ward": hospital.a.ward.code,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["scope"], body["ward"], body["kind"]) == (
        "ward",
        hospital.a.ward.code,
        "threshold",
    )
    rule = AlertRule.objects.get(public_id=body["id"])
    entry = LogEntry.objects.get(object_id=str(rule.pk), content_type__model="alertrule")
    assert (entry.action_flag, entry.user) == (ADDITION, hospital.admin)


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"name": "no limit", "code": "8867-4", "priority": "low"}, "low"),
        ({"name": "no code", "low": 40, "priority": "low"}, "code"),
        ({"name": "upside", "code": "8867-4", "low": 90, "high": 50, "priority": "low"}, "high"),
        ({"name": "never", "code": "59408-5", "low": 120, "priority": "high"}, "low"),
        ({"name": "c", "code": "8867-4", "low": 40, "clear_low": 30, "priority": "low"}, "clear_low"),  # noqa: E501
        ({"name": "news2 + code", "kind": "news2_7", "code": "8867-4", "priority": "high"}, "code"),
    ],
)  # fmt: skip
def test_it_refuses_a_rule_the_database_would_refuse_with_400(
    hospital: Hospital, rule: dict, field: str
) -> None:
    response = session_client(hospital.admin).post(RULES, rule, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"]


def test_it_refuses_a_rule_for_both_a_ward_and_a_patient(hospital: Hospital) -> None:
    response = session_client(hospital.admin).post(
        RULES,
        {
            "name": "both",
            "code": "8867-4",
            "high": 150,
            "priority": "low",
            "ward": hospital.a.ward.code,
            "patient": str(hospital.a.patient.public_id),
        },
        format="json",
    )
    assert response.status_code == 400
    assert "patient" in response.json()["fields"]


def test_it_changes_a_rule_judged_with_its_other_values(hospital: Hospital) -> None:
    client = session_client(hospital.admin)
    url = f"{RULES}{hospital.a.rule.public_id}/"
    refused = client.patch(url, {"clear_low": 80}, format="json")  # below its low of 90
    changed = client.patch(url, {"enabled": False, "clear_low": 93}, format="json")
    assert refused.status_code == 400
    assert "clear_low" in refused.json()["fields"]
    assert changed.status_code == 200
    assert (changed.json()["enabled"], changed.json()["clear_low"]) == (False, 93.0)
    assert LogEntry.objects.filter(action_flag=CHANGE, object_id=str(hospital.a.rule.pk)).exists()


def test_it_keeps_a_rule_that_fired_and_says_so_with_409(hospital: Hospital) -> None:
    response = session_client(hospital.admin).delete(f"{RULES}{hospital.a.rule.public_id}/")
    assert response.status_code == 409
    assert response.json()["code"] == "rule_in_use"
    assert AlertRule.objects.filter(pk=hospital.a.rule.pk).exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_it_deletes_a_rule_that_never_fired(hospital: Hospital) -> None:
    rule = hospital.a.unused_rule
    response = session_client(hospital.admin).delete(f"{RULES}{rule.public_id}/")
    assert response.status_code == 204
    assert not AlertRule.objects.filter(pk=rule.pk).exists()
    assert LogEntry.objects.filter(action_flag=DELETION, object_id=str(rule.pk)).exists()
