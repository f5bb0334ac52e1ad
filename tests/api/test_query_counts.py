"""Every list costs the same number of queries for 1 row as for 50, the audit INSERT included."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from monitoring.models import Device
from patients.models import Bed, Ward, WardAccess
from tests import factories
from tests.api.hospital import (
    alert_for,
    news2_for,
    observation_for,
    session_client,
    threshold_rule,
)

pytestmark = pytest.mark.django_db


@dataclass
class Setting:
    ward: Ward
    clinician: User
    admin: User


def setting_build() -> Setting:
    """A ward of its own, its clinician and an administrator."""
    ward = factories.ward()
    return Setting(ward, factories.clinician(ward), factories.administrator())


def _beds(setting: Setting, n: int) -> list[Bed]:
    return Bed.objects.bulk_create(Bed(ward=setting.ward, label=f"n{i}") for i in range(n))


def _admissions(setting: Setting, n: int) -> str:
    for bed in _beds(setting, n):
        factories.admitted_patient(bed)
    return "/api/v1/admissions/"


def _patients(setting: Setting, n: int) -> str:
    _admissions(setting, n)
    return "/api/v1/patients/"


def _wards(setting: Setting, n: int) -> str:
    for _ in range(n - 1):  # the clinician's own ward is the first
        WardAccess.objects.create(user=setting.clinician, ward=factories.ward())
    return "/api/v1/wards/"


def _beds_list(setting: Setting, n: int) -> str:
    _beds(setting, n)
    return "/api/v1/beds/"


def _alerts(setting: Setting, n: int) -> str:
    rule = threshold_rule(setting.ward)
    for bed in _beds(setting, n):
        alert_for(factories.admitted_patient(bed), rule)
    return "/api/v1/alerts/"


def _one_patient(setting: Setting) -> tuple[str, object]:
    admission = factories.admitted_patient(factories.bed(setting.ward))
    return str(admission.patient.public_id), admission.patient


def _observations(setting: Setting, n: int) -> str:
    public_id, patient = _one_patient(setting)
    device = factories.device()
    for i in range(n):
        observation_for(patient, minutes_ago=i + 1, device=device)  # type: ignore[arg-type]
    return f"/api/v1/observations/?patient={public_id}"


def _trend(setting: Setting, n: int) -> str:
    public_id, patient = _one_patient(setting)
    device = factories.device()
    for i in range(n):
        observation_for(patient, minutes_ago=i + 1, device=device)  # type: ignore[arg-type]
    return f"/api/v1/observations/trend/?patient={public_id}&bucket=60"


def _news2(setting: Setting, n: int) -> str:
    public_id, patient = _one_patient(setting)
    for i in range(n):
        news2_for(patient, minutes_ago=i + 1)  # type: ignore[arg-type]
    return f"/api/v1/patients/{public_id}/news2/"


def _rules(setting: Setting, n: int) -> str:
    for i in range(n):
        threshold_rule(setting.ward, name=f"rule {i}", patient=None)
    return "/api/v1/alert-rules/"


def _devices(setting: Setting, n: int) -> str:
    beds = _beds(setting, n)
    Device.objects.bulk_create(
        Device(serial=f"{setting.ward.code}-{i}", bed=bed) for i, bed in enumerate(beds)
    )
    return "/api/v1/devices/"


# (what is listed, the builder, who asks, whether the read of patients' records is audited)
LISTS: list[tuple[str, Callable[[Setting, int], str], str, bool]] = [
    ("wards", _wards, "clinician", False),
    ("beds", _beds_list, "clinician", False),
    ("patients", _patients, "clinician", True),
    ("admissions", _admissions, "clinician", True),
    ("observations", _observations, "clinician", True),
    ("trend", _trend, "clinician", True),
    ("alerts", _alerts, "clinician", True),
    ("news2", _news2, "clinician", True),
    ("alert rules", _rules, "clinician", False),
    ("devices", _devices, "admin", False),
]


def _queries(
    build: Callable[[Setting, int], str], who: str, n: int
) -> tuple[list[str], dict[str, Any]]:
    setting = setting_build()
    url = build(setting, n)
    client = session_client(setting.clinician if who == "clinician" else setting.admin)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return [query["sql"] for query in captured.captured_queries], response.json()


@pytest.mark.parametrize(("name", "build", "who", "audited"), LISTS, ids=[row[0] for row in LISTS])
def test_it_lists_in_constant_queries(
    name: str,
    build: Callable[[Setting, int], str],
    who: str,
    audited: bool,
) -> None:
    one, _ = _queries(build, who, 1)
    fifty, body = _queries(build, who, 50)
    if name == "trend":
        assert sum(point["count"] for point in body["series"][0]["points"]) == 50
    else:
        assert len(body["results"]) == 50
    assert len(one) == len(fifty), (one, fifty)
    # Django logs an executemany as "<n> times: INSERT ..."; mysqlclient sends it as one
    # multi-row INSERT.
    audit_inserts = [sql for sql in fifty if "INSERT INTO `patients_accesslog`" in sql]
    assert len(audit_inserts) == (1 if audited else 0)


def test_it_costs_the_trend_one_aggregate_query_whatever_the_readings() -> None:
    setting = setting_build()
    public_id, patient = _one_patient(setting)
    device = factories.device()
    start = timezone.now() - dt.timedelta(minutes=30)
    observation_for(patient, minutes_ago=5, device=device)  # type: ignore[arg-type]
    client = session_client(setting.clinician)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(
            "/api/v1/observations/trend/",
            {"patient": public_id, "from": start.isoformat(), "bucket": 600},
        )
    assert response.status_code == 200
    aggregates = [q["sql"] for q in captured.captured_queries if "GROUP BY" in q["sql"]]
    assert len(aggregates) == 1
    assert "FLOOR(UNIX_TIMESTAMP(" in aggregates[0]
