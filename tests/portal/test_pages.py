"""Clinician pages: login, the ward list with its alert counts, the ward dashboard shell, the
patient page and its trend data, all scoped by ward."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count
from django.db.utils import ConnectionHandler
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerts.models import Alert, AlertRule
from alerts.services import alert_acknowledge
from monitoring.models import Device, Observation
from monitoring.selectors import EpochBucket, observation_trend
from patients.models import Admission, Patient, Ward
from patients.services import admission_discharge, admission_transfer
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_sends_an_anonymous_visitor_to_the_login_page() -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_logs_a_clinician_in_and_lists_only_their_wards() -> None:
    own = factories.ward(name="Acute Medical")
    factories.ward(name="Surgical")
    user = factories.clinician(own)
    client = Client()
    response = client.post(
        "/accounts/login/", {"username": user.username, "password": "test-password-123"}
    )
    assert response.status_code == 302
    page = client.get("/")
    assert page.status_code == 200
    assert "Acute Medical" in page.text
    assert "Surgical" not in page.text


def test_it_refuses_a_wrong_password() -> None:
    user = factories.clinician()
    response = Client().post("/accounts/login/", {"username": user.username, "password": "nope"})
    assert response.status_code == 200
    assert "did not match" in response.text


def test_it_shows_a_clinician_their_ward_with_its_beds_and_patients() -> None:
    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward, label="Bed 07"))
    factories.bed(ward, label="Bed 08")
    client = Client()
    client.force_login(factories.clinician(ward))
    page = client.get(f"/wards/{ward.code}/")
    assert page.status_code == 200
    assert "Bed 07" in page.text and "Bed 08" in page.text
    assert admission.patient.mrn in page.text
    assert "Empty bed" in page.text


def test_it_answers_another_wards_page_as_if_it_did_not_exist() -> None:
    own, other = factories.ward(), factories.ward()
    client = Client()
    client.force_login(factories.clinician(own))
    assert client.get(f"/wards/{other.code}/").status_code == 404
    assert client.get("/wards/no-such-ward/").status_code == 404


def test_it_shows_an_administrator_every_ward() -> None:
    wards = [factories.ward(), factories.ward()]
    client = Client()
    client.force_login(factories.administrator())
    page = client.get("/")
    assert all(ward.name in page.text for ward in wards)
    assert client.get(f"/wards/{wards[1].code}/").status_code == 200


def test_it_keeps_the_ward_page_query_count_flat_as_beds_fill() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ward = factories.ward()
    factories.admitted_patient(factories.bed(ward))
    client = Client()
    client.force_login(factories.clinician(ward))
    with CaptureQueriesContext(connection) as one_bed:
        client.get(f"/wards/{ward.code}/")
    for _ in range(11):
        factories.admitted_patient(factories.bed(ward))
    with CaptureQueriesContext(connection) as twelve_beds:
        client.get(f"/wards/{ward.code}/")
    assert len(twelve_beds) == len(one_bed)


def test_it_serves_its_own_stylesheets_without_a_cdn() -> None:
    client = Client()
    for path in ("/static/portal/portal.css", "/static/admin/css/base.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert "css" in response["Content-Type"]
    login = client.get("/accounts/login/")
    assert "/static/portal/portal.css" in login.text
    assert "//cdn" not in login.text and "googleapis" not in login.text


def test_it_locks_out_a_username_after_repeated_wrong_passwords() -> None:
    user = factories.clinician()
    client = Client()
    for _ in range(5):
        client.post("/accounts/login/", {"username": user.username, "password": "guess"})
    locked = client.post(
        "/accounts/login/", {"username": user.username, "password": "test-password-123"}
    )
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_it_keeps_a_watched_dashboards_session_alive_and_says_when_it_ended() -> None:
    client = Client()
    client.force_login(factories.clinician())
    assert client.post("/accounts/keepalive/").status_code == 204
    client.post("/accounts/logout/")
    ended = client.post("/accounts/keepalive/")
    assert ended.status_code == 401
    assert ended.json()["code"] == "session_ended"


# --- ward list: open alerts by priority ---------------------------------------------------------


def _rule(priority: str, name: str | None = None) -> AlertRule:
    return AlertRule.objects.create(
        name=name or f"HR above 110 ({priority})",
        kind=AlertRule.Kind.THRESHOLD,
        code="8867-4",
        high=110,
        priority=priority,
    )


def _alert(admission: Admission, rule: AlertRule, state: str = Alert.State.ACTIVE) -> Alert:
    return Alert.objects.create(
        patient=admission.patient,
        rule=rule,
        bed=admission.bed,
        priority=rule.priority,
        state=state,
        message=rule.name,
        fired_at=timezone.now() - dt.timedelta(minutes=1),
        resolved_at=timezone.now() if state == Alert.State.RESOLVED else None,
    )


def _counts(page: Any, ward: Ward) -> dict[str, int]:
    row = re.search(rf'<tr data-ward="{ward.code}">(.*?)</tr>', page.text, re.S)
    assert row, f"no row for {ward.code}"
    return {
        priority: int(count)
        for priority, count in re.findall(r'data-priority="(\w+)"[^>]*>(\d+)<', row.group(1))
    }


def test_it_counts_each_wards_open_alerts_by_priority() -> None:
    amu, surgical, hidden = factories.ward(), factories.ward(), factories.ward()
    high, high_2, medium, low = (
        _rule("high"),
        _rule("high", "SpO2 low"),
        _rule("medium"),
        _rule("low"),
    )
    first = factories.admitted_patient(factories.bed(amu))
    second = factories.admitted_patient(factories.bed(amu))
    _alert(first, high)
    _alert(first, high_2, Alert.State.ACKNOWLEDGED)  # acknowledged is still open
    _alert(first, medium)
    _alert(second, high, Alert.State.RESOLVED)  # resolved: no longer counted
    _alert(factories.admitted_patient(factories.bed(surgical)), low)
    _alert(factories.admitted_patient(factories.bed(hidden)), high)
    client = Client()
    client.force_login(factories.clinician(amu, surgical))

    page = client.get("/")

    assert _counts(page, amu) == {"high": 2, "medium": 1, "low": 0}
    assert _counts(page, surgical) == {"high": 0, "medium": 0, "low": 1}
    assert hidden.name not in page.text
    assert "2 open high-priority alerts" in page.text


def test_it_counts_a_patients_alerts_on_the_ward_they_lie_in_now() -> None:
    amu, surgical = factories.ward(), factories.ward()
    admission = factories.admitted_patient(factories.bed(amu))
    _alert(admission, _rule("high"))
    admission_transfer(admission=admission, to_bed=factories.bed(surgical))
    client = Client()
    client.force_login(factories.clinician(amu, surgical))

    page = client.get("/")

    assert _counts(page, amu)["high"] == 0
    assert _counts(page, surgical)["high"] == 1


def test_it_lists_the_wards_with_their_counts_in_a_flat_number_of_queries() -> None:
    rule = _rule("high")
    user = factories.clinician()

    def add_ward() -> None:
        ward = factories.ward()
        user.ward_accesses.create(ward=ward)
        for _ in range(2):
            _alert(factories.admitted_patient(factories.bed(ward)), rule)

    client = Client()
    client.force_login(user)
    add_ward()
    with CaptureQueriesContext(connection) as one_ward:
        assert client.get("/").status_code == 200
    for _ in range(4):
        add_ward()
    with CaptureQueriesContext(connection) as five_wards:
        page = client.get("/")
    assert page.text.count('data-priority="high"') == 5
    assert len(five_wards) == len(one_ward)


# --- ward dashboard shell -----------------------------------------------------------------------


def test_it_serves_the_dashboard_shell_with_its_socket_address_and_no_inline_script() -> None:
    ward = factories.ward(code="amu")
    admission = factories.admitted_patient(factories.bed(ward, label="Bed 04"))
    client = Client()
    client.force_login(factories.clinician(ward))

    page = client.get("/wards/amu/")

    assert 'data-ward="amu"' in page.text
    assert 'data-ws-url="ws://testserver/ws/wards/amu/?protocol=2"' in page.text
    assert f'href="/patients/{admission.patient.public_id}/"' in page.text
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts, "the dashboard loads its scripts"
    assert all('src="/static/' in tag for tag in scripts), scripts
    for path in ("/static/portal/dashboard.js", "/static/vendor/uplot/uPlot.iife.min.js"):
        assert path in page.text
    assert "CONNECTING — no live values yet" in page.text  # nothing looks live before data
    assert 'aria-live="assertive"' in page.text


def test_it_serves_the_dashboard_scripts_and_the_pinned_uplot_itself() -> None:
    client = Client()
    for path in (
        "/static/portal/dashboard.js",
        "/static/portal/sparkline.js",
        "/static/portal/patient.js",
        "/static/vendor/uplot/uPlot.iife.min.js",
        "/static/vendor/uplot/uPlot.min.css",
    ):
        response = client.get(path)
        assert response.status_code == 200, f"{path} missing: run bin/setup (it copies uPlot)"


# --- patient page -------------------------------------------------------------------------------


def _patient_url(patient: Patient, suffix: str = "") -> str:
    return f"/patients/{patient.public_id}/{suffix}"


def test_it_shows_a_patient_of_the_clinicians_ward_with_who_acknowledged_their_alerts() -> None:
    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward, label="Bed 04"))
    user = factories.clinician(ward, username="nurse.ack")
    alert_acknowledge(alert=_alert(admission, _rule("high", "SpO2 below 90 %")), user=user)
    client = Client()
    client.force_login(user)

    page = client.get(_patient_url(admission.patient))

    assert page.status_code == 200
    assert admission.patient.mrn in page.text and "Bed 04" in page.text
    row = re.search(r'<tr [^>]*data-kind="acknowledged">(.*?)</tr>', page.text, re.S)
    assert row and "nurse.ack" in row.group(1) and "SpO2 below 90 %" in row.group(1)
    assert f'data-trends-url="/patients/{admission.patient.public_id}/trends.json"' in page.text


def test_it_answers_a_patient_on_another_ward_as_if_they_did_not_exist() -> None:
    own, other = factories.ward(), factories.ward()
    elsewhere = factories.admitted_patient(factories.bed(other)).patient
    discharged = factories.admitted_patient(factories.bed(own))
    admission_discharge(admission=discharged)
    client = Client()
    client.force_login(factories.clinician(own))

    assert client.get(_patient_url(elsewhere)).status_code == 404
    assert client.get(_patient_url(discharged.patient)).status_code == 404
    assert client.get(_patient_url(elsewhere, "trends.json?hours=1")).status_code == 404
    assert client.get("/patients/00000000-0000-0000-0000-000000000000/").status_code == 404

    admin = Client()
    admin.force_login(factories.administrator())
    assert admin.get(_patient_url(elsewhere)).status_code == 200
    assert admin.get(_patient_url(discharged.patient)).status_code == 200


def test_it_sends_an_anonymous_visitor_of_a_patient_page_to_the_login_page() -> None:
    patient = factories.admitted_patient().patient
    for url in (_patient_url(patient), _patient_url(patient, "trends.json?hours=1")):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


# --- trends -------------------------------------------------------------------------------------


def _readings(
    device: Device,
    patient: Patient,
    code: str,
    series: list[tuple[dt.datetime, float]],
    *,
    artifact: bool = False,
) -> None:
    Observation.objects.bulk_create(
        Observation(
            device=device,
            patient=patient,
            code=code,
            value=value,
            unit={"8867-4": "/min", "59408-5": "%"}[code],
            observed_at=at,
            received_at=at,
            artifact=artifact,
        )
        for at, value in series
    )


def _bedside() -> tuple[Client, Admission, Device]:
    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward))
    client = Client()
    client.force_login(factories.clinician(ward))
    return client, admission, factories.device(admission.bed)


def test_it_gives_each_vitals_trend_as_bucketed_min_mean_and_max_columns() -> None:
    client, admission, device = _bedside()
    now = timezone.now()
    patient = admission.patient
    # 1,000 heart rates every 3.5 s across the last hour, 200 SpO2 values, one reading too old.
    _readings(
        device,
        patient,
        "8867-4",
        [(now - dt.timedelta(seconds=3540 - 3.5 * i), 60 + i % 40) for i in range(1000)],
    )
    _readings(
        device,
        patient,
        "59408-5",
        [(now - dt.timedelta(seconds=3000 - 10 * i), 90 + i % 8) for i in range(200)],
    )
    _readings(device, patient, "8867-4", [(now - dt.timedelta(hours=2), 250)])

    response = client.get(_patient_url(patient, "trends.json?hours=1"))

    assert response.status_code == 200
    body = response.json()
    assert (body["hours"], body["bucket_seconds"]) == (1, 5)
    assert [v["code"] for v in body["vitals"]] == ["8867-4", "59408-5"]  # the catalogue's order
    heart_rate = body["vitals"][0]
    assert (heart_rate["short_name"], heart_rate["unit"]) == ("HR", "/min")
    buckets = len(heart_rate["t"])
    assert 0 < buckets <= 3600 // 5 + 1
    assert len(heart_rate["min"]) == len(heart_rate["mean"]) == len(heart_rate["max"]) == buckets
    assert sum(heart_rate["count"]) == 1000  # aggregated, none lost, the old one left out
    assert max(heart_rate["max"]) < 250
    assert heart_rate["t"] == sorted(heart_rate["t"])
    for vital in body["vitals"]:
        assert all(
            low <= mean <= high
            for low, mean, high in zip(vital["min"], vital["mean"], vital["max"], strict=True)
        )
    assert set(body["news2"]) == {"t", "total", "complete", "risk"}


@pytest.mark.parametrize(("hours", "bucket"), [(1, 5), (8, 40), (24, 120)])
def test_it_keeps_every_range_to_about_720_points(hours: int, bucket: int) -> None:
    client, admission, device = _bedside()
    now = timezone.now()
    span = hours * 3600
    _readings(
        device,
        admission.patient,
        "8867-4",
        [(now - dt.timedelta(seconds=span - span * i / 2000), 70) for i in range(2000)],
    )

    body = client.get(_patient_url(admission.patient, f"trends.json?hours={hours}")).json()

    assert body["bucket_seconds"] == bucket
    assert len(body["vitals"][0]["t"]) <= 721


def test_it_aggregates_the_trend_in_the_database_in_a_constant_number_of_queries() -> None:
    client, admission, device = _bedside()
    now = timezone.now()
    url = _patient_url(admission.patient, "trends.json?hours=1")

    def add(count: int) -> None:
        _readings(
            device,
            admission.patient,
            "8867-4",
            [
                (now - dt.timedelta(seconds=3500 * (i + 0.5) / count), 70 + i % 5)
                for i in range(count)
            ],
        )

    add(10)
    with CaptureQueriesContext(connection) as ten:
        assert client.get(url).status_code == 200
    add(990)
    with CaptureQueriesContext(connection) as thousand:
        body = client.get(url).json()
    assert len(thousand) == len(ten)
    trend_queries = [q["sql"] for q in thousand if "monitoring_observation" in q["sql"]]
    assert len(trend_queries) == 1
    assert "GROUP BY" in trend_queries[0] and "UNIX_TIMESTAMP" in trend_queries[0]
    assert sum(body["vitals"][0]["count"]) == 1000
    assert len(body["vitals"][0]["t"]) < 1000


def test_it_computes_each_buckets_min_mean_and_max_and_leaves_artifacts_out() -> None:
    _, admission, device = _bedside()
    bucket = 5
    start = dt.datetime.fromtimestamp(
        (int(timezone.now().timestamp()) // bucket - 100) * bucket, tz=dt.UTC
    )
    at = lambda seconds: start + dt.timedelta(seconds=seconds)  # noqa: E731
    _readings(
        device,
        admission.patient,
        "8867-4",
        [(at(0.5), 60), (at(1.5), 70), (at(4.9), 80), (at(5.0), 90)],
    )
    _readings(device, admission.patient, "8867-4", [(at(2), 300)], artifact=True)
    _readings(device, factories.admitted_patient().patient, "8867-4", [(at(1), 10)])

    trend = observation_trend(
        patient_id=admission.patient_id,
        start=start,
        end=start + dt.timedelta(minutes=1),
        bucket_seconds=bucket,
    )

    first, second = trend["8867-4"]
    assert (first.at, first.min, first.mean, first.max, first.count) == (start, 60, 70, 80, 3)
    assert (second.at, second.min, second.max, second.count) == (at(5), 90, 90, 1)


def test_it_refuses_a_trend_range_it_does_not_offer() -> None:
    client, admission, _ = _bedside()
    for hours in ("3", "abc", "0"):
        response = client.get(_patient_url(admission.patient, f"trends.json?hours={hours}"))
        assert response.status_code == 400
        assert response.json()["code"] == "invalid_hours"


def test_it_buckets_times_the_same_way_on_sqlite_for_the_embedded_demo() -> None:
    """bin/demo runs on SQLite: the bucket expression has a SQLite form, checked here against
    a scratch in-memory database (the suite itself runs on MariaDB only)."""
    times = [
        dt.datetime(2026, 11, 21, 10, 0, 0, 500000, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 21, 10, 0, 4, 900000, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 21, 10, 0, 5, tzinfo=dt.UTC),
    ]
    queryset = (
        Observation.objects.annotate(bucket=EpochBucket("observed_at", seconds=5))
        .values("bucket")
        .annotate(n=Count("pk"))
        .order_by("bucket")
    )
    sqlite = ConnectionHandler(
        {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
    )["default"]
    try:
        with sqlite.schema_editor() as editor:
            editor.create_model(Observation)
        with sqlite.constraint_checks_disabled(), sqlite.cursor() as cursor:
            for moment in times:
                cursor.execute(
                    "INSERT INTO monitoring_observation (device_id, code, value, unit, observed_at,"
                    " received_at, artifact) VALUES (1, '8867-4', 70, '/min', %s, %s, 0)",
                    [sqlite.ops.adapt_datetimefield_value(moment)] * 2,
                )
            sql, params = queryset.query.get_compiler(connection=sqlite).as_sql()
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    finally:
        sqlite.close()
    first = int(times[0].timestamp()) // 5
    assert rows == [(first, 2), (first + 1, 1)]


def test_it_records_each_read_of_a_patient_page_in_the_access_log() -> None:
    from patients.models import AccessLog

    ward = factories.ward()
    admission = factories.admitted_patient(factories.bed(ward))
    nurse = factories.clinician(ward)
    client = Client()
    client.force_login(nurse)
    assert client.get(f"/patients/{admission.patient.public_id}/").status_code == 200
    assert client.get(f"/patients/{admission.patient.public_id}/trends.json").status_code == 200
    assert list(
        AccessLog.objects.filter(user=nurse).order_by("pk").values_list("action", "patient_id")
    ) == [
        ("portal.patient_page", admission.patient_id),
        ("portal.patient_trends", admission.patient_id),
    ]
