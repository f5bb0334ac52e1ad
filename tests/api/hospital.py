"""Builders for the records-API tests: two wards, each with its records, and the callers."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.test import APIClient

from alerts.models import Alert, AlertRule, News2Score, Priority
from monitoring.models import Device, Observation
from monitoring.services import device_token_issue
from patients.api_access import api_token_issue
from patients.models import Admission, Bed, Patient, Ward
from tests import factories


@dataclass
class WardRecords:
    """One ward and one record of each kind in it."""

    ward: Ward
    bed: Bed
    free_bed: Bed
    patient: Patient
    admission: Admission
    unadmitted: Patient
    device: Device
    device_token: str
    rule: AlertRule
    unused_rule: AlertRule
    alert: Alert
    observation: Observation
    news2: News2Score


def alert_for(admission: Admission, rule: AlertRule, **fields: object) -> Alert:
    values: dict[str, object] = {
        "patient": admission.patient,
        "rule": rule,
        "bed": admission.bed,
        "priority": rule.priority,
        "message": f"SpO2 85 % below {rule.low:g} %",
        "code": rule.code,
        "value": 85.0,
        "unit": "%",
        "fired_at": timezone.now() - dt.timedelta(minutes=5),
        "latching": True,
    }
    values.update(fields)
    return Alert.objects.create(**values)


def threshold_rule(ward: Ward | None = None, **fields: object) -> AlertRule:
    values: dict[str, object] = {
        "name": "SpO2 low",
        "code": "59408-5",
        "low": 90.0,
        "priority": Priority.HIGH,
        "ward": ward,
    }
    values.update(fields)
    return AlertRule.objects.create(**values)


def observation_for(
    patient: Patient | None, *, minutes_ago: float = 1, **fields: object
) -> Observation:
    at = timezone.now() - dt.timedelta(minutes=minutes_ago)
    values: dict[str, object] = {
        "patient": patient,
        "code": "8867-4",
        "value": 72.0,
        "unit": "/min",
        "observed_at": at,
        "received_at": at,
    }
    values.update(fields)
    if values.get("device") is None and values.get("entered_by") is None:
        values["device"] = factories.device()  # a reading has a source
    return Observation.objects.create(**values)


def news2_for(patient: Patient, *, minutes_ago: float = 1, total: int = 1) -> News2Score:
    return News2Score.objects.create(
        patient=patient,
        observed_at=timezone.now() - dt.timedelta(minutes=minutes_ago),
        total=total,
        complete=True,
        scale=1,
        risk="low",
        parameters=[
            {"parameter": "pulse", "code": "8867-4", "value": 72.0, "score": 0, "stale": False}
        ],
    )


def ward_records(code: str) -> WardRecords:
    ward = factories.ward(code=code, name=f"Ward {code}")
    bed = factories.bed(ward, label="1")
    admission = factories.admitted_patient(bed, mrn=f"MRN-{code}")
    admission.admitted_at = timezone.now() - dt.timedelta(hours=2)
    admission.save(update_fields=["admitted_at"])
    device = factories.device(bed, serial=f"SN-{code}")
    rule = threshold_rule(ward, name=f"SpO2 low ({code})")
    return WardRecords(
        ward=ward,
        bed=bed,
        free_bed=factories.bed(ward, label="2"),
        patient=admission.patient,
        admission=admission,
        unadmitted=factories.patient(mrn=f"NEW-{code}"),
        device=device,
        device_token=device_token_issue(device=device),
        rule=rule,
        unused_rule=threshold_rule(ward, name=f"Spare ({code})", code="8867-4", low=40.0),
        alert=alert_for(admission, rule),
        observation=observation_for(admission.patient, device=device),
        news2=news2_for(admission.patient),
    )


@dataclass
class Hospital:
    a: WardRecords
    b: WardRecords
    clinician_a: User
    clinician_b: User
    admin: User
    token_a_read: str  # clinician A's API token, scope read only
    admin_token: str  # an administrator's API token, every scope


def hospital_build() -> Hospital:
    a, b = ward_records("ward-a"), ward_records("ward-b")
    admin = factories.administrator()
    clinician_a = factories.clinician(a.ward)
    _, token_a_read = api_token_issue(user=clinician_a, name="lab system", scopes=["read"])
    _, admin_token = api_token_issue(
        user=admin, name="integration", scopes=["read", "acknowledge", "write"]
    )
    return Hospital(
        a=a,
        b=b,
        clinician_a=clinician_a,
        clinician_b=factories.clinician(b.ward),
        admin=admin,
        token_a_read=token_a_read,
        admin_token=admin_token,
    )


def session_client(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def token_client(token: str, scheme: str = "Token") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{scheme} {token}")
    return client
