"""Change history (django-auditlog) and the append-only access log."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.test import Client
from django.urls import reverse

from config.observability import request_id
from patients.api_access import api_token_digest
from patients.audit import access_record, access_record_ward
from patients.models import AccessLog, ApiToken
from patients.services import admission_create
from tests import factories

pytestmark = pytest.mark.django_db


def test_it_records_who_changed_a_patient_in_the_admin_and_from_where() -> None:
    administrator = factories.administrator()
    patient = factories.patient(family_name="Before")
    client = Client(REMOTE_ADDR="10.1.2.3")
    client.force_login(administrator)
    data = {
        "mrn": patient.mrn,
        "family_name": "After",
        "given_name": patient.given_name,
        "date_of_birth": patient.date_of_birth.isoformat(),
        "sex": patient.sex,
        "news2_spo2_scale2": "",
        "admissions-TOTAL_FORMS": "0",
        "admissions-INITIAL_FORMS": "0",
        "alert_rules-TOTAL_FORMS": "0",
        "alert_rules-INITIAL_FORMS": "0",
    }
    response = client.post(reverse("admin:patients_patient_change", args=[patient.pk]), data)
    assert response.status_code == 302, response.content[:2000]
    entry = LogEntry.objects.get_for_object(patient).filter(action=LogEntry.Action.UPDATE).get()
    assert entry.actor == administrator
    assert entry.remote_addr == "10.1.2.3"
    assert entry.changes_dict["family_name"] == ["Before", "After"]


def test_it_records_changes_made_by_services() -> None:
    admission = admission_create(patient=factories.patient(), bed=factories.bed())
    assert LogEntry.objects.get_for_object(admission).filter(action=LogEntry.Action.CREATE).exists()


def test_it_keeps_token_digests_out_of_the_change_history() -> None:
    from patients.api_access import api_token_issue

    token, plain = api_token_issue(user=factories.administrator(), name="lab", scopes=["read"])
    entry = LogEntry.objects.get_for_object(token).get()
    assert "digest" not in entry.changes_dict
    assert api_token_digest(plain) not in str(entry.changes)


def test_it_appends_one_access_row_per_patient_in_one_query(
    django_assert_num_queries: object,
) -> None:
    user = factories.clinician()
    patients = [factories.patient() for _ in range(20)]
    with django_assert_num_queries(1):  # type: ignore[operator]
        access_record(
            user=user,
            patient_ids=[p.pk for p in patients],
            action="api.patients.list",
            address="10.0.0.1",
        )
    assert AccessLog.objects.filter(user=user, action="api.patients.list").count() == 20


def test_it_stores_an_access_row_as_the_orm_would() -> None:
    # An empty address is stored as NULL (GenericIPAddressField), a long resource is cut to
    # its column, a repeated patient is recorded once, an anonymous reader has no user.
    patient = factories.patient()
    access_record(
        user=None,
        patient_ids=[patient.pk, patient.pk],
        action="dashboard.subscribe",
        resource="r" * 250,
        address="",
    )
    [row] = AccessLog.objects.filter(action="dashboard.subscribe")
    assert (row.patient_id, row.user_id, row.token_id, row.address) == (
        patient.pk,
        None,
        None,
        None,
    )
    assert row.resource == "r" * 200
    assert row.at is not None


def test_it_records_each_patient_admitted_to_a_ward_in_one_statement_as_the_orm_would(
    django_assert_num_queries: object,
) -> None:
    from patients.services import admission_discharge

    ward, other_ward = factories.ward(), factories.ward()
    admitted = [factories.admitted_patient(factories.bed(ward)) for _ in range(3)]
    discharged = factories.admitted_patient(factories.bed(ward))
    admission_discharge(admission=discharged)
    factories.admitted_patient(factories.bed(other_ward))
    reader = factories.clinician(ward)
    access_record_ward(user=reader, ward_code=ward.code, action="warm-up")  # builds the SQL
    token = request_id.set("req-ward-audit")
    try:
        with django_assert_num_queries(1):  # type: ignore[operator]
            access_record_ward(
                user=reader,
                ward_code=ward.code,
                action="dashboard.subscribe",
                resource="ws/wards/" + "w" * 250,
                address="10.0.0.7",
            )
    finally:
        request_id.reset(token)
    rows = list(AccessLog.objects.filter(action="dashboard.subscribe").order_by("patient_id"))
    assert [row.patient_id for row in rows] == sorted(a.patient_id for a in admitted)
    for row in rows:
        assert (row.user_id, row.token_id, row.address) == (reader.pk, None, "10.0.0.7")
        assert row.request_id == "req-ward-audit"
        assert row.resource == ("ws/wards/" + "w" * 250)[:200]
        assert row.at is not None and row.at.tzinfo is not None
    # An empty address is stored as NULL, as the ORM stores it; a ward without patients adds
    # nothing.
    access_record_ward(user=reader, ward_code=ward.code, action="no-address", address="")
    assert set(AccessLog.objects.filter(action="no-address").values_list("address", flat=True)) == {
        None
    }
    access_record_ward(user=reader, ward_code=factories.ward().code, action="empty ward")
    assert not AccessLog.objects.filter(action="empty ward").exists()


def test_it_refuses_to_rewrite_the_access_log() -> None:
    access_record(user=None, patient_ids=[factories.patient().pk], action="x")
    row = AccessLog.objects.get()
    row.action = "tampered"
    with pytest.raises(ValueError, match="append-only"):
        row.save()


def test_it_lets_administrators_browse_the_access_log_read_only() -> None:
    patient = factories.patient()
    reader = factories.clinician()
    access_record(user=reader, patient_ids=[patient.pk], action="portal.patient_page")
    client = Client()
    client.force_login(factories.administrator())
    page = client.get(reverse("admin:patients_accesslog_changelist"), {"q": patient.mrn})
    assert page.status_code == 200
    assert "portal.patient_page" in page.text
    assert client.get(reverse("admin:patients_accesslog_add")).status_code == 403


def test_it_issues_an_api_token_in_the_admin_once() -> None:
    administrator = factories.administrator()
    client = Client()
    client.force_login(administrator)
    response = client.post(
        reverse("admin:patients_apitoken_add"),
        {"name": "Lab system", "user": administrator.pk, "scopes": '["read"]'},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get(name="Lab system")
    shown = response.context["plain"]
    assert api_token_digest(shown) == token.digest
    assert shown not in str(client.session.items())
