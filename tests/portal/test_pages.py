"""Clinician pages: login, the ward list and the (placeholder) ward page, scoped by ward."""

from __future__ import annotations

import pytest
from django.test import Client

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
