"""The administrators' admin for devices (and their API tokens) and observations."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from monitoring.models import Device, IngestMessage, Observation, token_digest
from monitoring.services import device_token_issue
from monitoring.vitals import HEART_RATE, SPO2
from patients.models import Bed, Patient
from tests import factories

if TYPE_CHECKING:
    # The test client's response type (context, redirect_chain...), known to django-stubs only.
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db

DEVICES = reverse("admin:monitoring_device_changelist")
OBSERVATIONS = reverse("admin:monitoring_observation_changelist")
TOKEN_IN_PAGE = re.compile(r'value="(dev_[A-Za-z0-9_-]+)"')


@pytest.fixture
def admin_browser() -> Client:
    # A Client of its own, not pytest-django's ``client`` fixture, which a conftest may replace.
    browser = Client()
    browser.force_login(factories.administrator())
    return browser


def _queries(browser: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = browser.get(url)
    assert response.status_code == 200
    return len(captured)


def _issue(browser: Client, *devices: Device) -> tuple[Response, dict[str, str]]:
    """Run the action; return the response and the tokens it shows, by device serial."""
    response = browser.post(
        DEVICES, {"action": "issue_token", "_selected_action": [d.pk for d in devices]}
    )
    assert response.status_code == 200
    content = response.content.decode()
    tokens = TOKEN_IN_PAGE.findall(content)
    assert len(tokens) == len(devices)
    # The page lists the devices by serial.
    return response, dict(zip(sorted(d.serial for d in devices), tokens, strict=True))


def _observation(device: Device, patient: Patient | None, code: str = HEART_RATE.code) -> None:
    now = timezone.now()
    Observation.objects.create(
        device=device,
        patient=patient,
        code=code,
        value=72,
        unit=HEART_RATE.unit if code == HEART_RATE.code else SPO2.unit,
        observed_at=now,
        received_at=now,
    )


# Devices --------------------------------------------------------------------------------------


def test_it_lists_devices_with_the_token_hint_and_never_the_digest(admin_browser: Client) -> None:
    device = factories.device(factories.bed(label="B9"), manufacturer="Philips", model="MX450")
    device_token_issue(device=device)
    device.refresh_from_db()

    listing = admin_browser.get(DEVICES).content.decode()
    detail = admin_browser.get(
        reverse("admin:monitoring_device_change", args=[device.pk])
    ).content.decode()

    for page in (listing, detail):
        assert device.token_hint in page
        assert device.token_digest not in page
    assert "Philips" in listing
    assert "B9" in listing


def test_it_searches_devices_by_serial_and_filters_them_by_state_and_ward(
    admin_browser: Client,
) -> None:
    icu = factories.ward(code="icu")
    in_icu = factories.device(factories.bed(icu), serial="PM-ICU-1")
    retired = factories.device(factories.bed(), serial="PM-OLD-2", active=False)

    def listed(**query: object) -> list[str]:
        response = admin_browser.get(DEVICES, query)
        assert response.status_code == 200
        return [d.serial for d in response.context["cl"].result_list]

    assert listed(q="icu-1") == [in_icu.serial]
    assert listed(active__exact="0") == [retired.serial]
    assert listed(bed__ward__id__exact=icu.pk) == [in_icu.serial]


def test_it_shows_each_new_token_once_and_keeps_only_its_digest(admin_browser: Client) -> None:
    first, second = factories.device(serial="SN-A"), factories.device(serial="SN-B")

    response, tokens = _issue(admin_browser, first, second)

    content = response.content.decode()
    assert "it will not be shown again" in content
    assert "no-store" in response["Cache-Control"]
    for device in (first, second):
        device.refresh_from_db()
        assert device.token_digest == token_digest(tokens[device.serial])
    # Nothing kept anywhere to show it a second time.
    again = admin_browser.get(DEVICES).content.decode()
    assert not any(token in again for token in tokens.values())


def test_it_keeps_new_tokens_out_of_the_session_messages_and_logs(
    admin_browser: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    device = factories.device()

    response, tokens = _issue(admin_browser, device)

    token = tokens[device.serial]
    session = admin_browser.session
    assert not any(token in str(value) for value in session.values())
    assert not any(token in str(m) for m in get_messages(response.wsgi_request))
    assert not any(token in morsel.value for morsel in admin_browser.cookies.values())
    assert token not in caplog.text


def test_it_invalidates_the_previous_token_when_rotating(admin_browser: Client) -> None:
    device = factories.device()
    _, first = _issue(admin_browser, device)
    _, second = _issue(admin_browser, device)

    assert first[device.serial] != second[device.serial]
    assert not Device.objects.filter(token_digest=token_digest(first[device.serial])).exists()
    assert Device.objects.get(token_digest=token_digest(second[device.serial])) == device


def test_it_revokes_a_token(admin_browser: Client) -> None:
    device = factories.device()
    device_token_issue(device=device)

    response = admin_browser.post(
        DEVICES, {"action": "revoke_token", "_selected_action": [device.pk]}, follow=True
    )

    device.refresh_from_db()
    assert not device.has_token
    assert device.token_hint == ""
    assert [str(m) for m in response.context["messages"]] == [
        "Revoked the API token of 1 device; they can no longer post readings."
    ]


def test_it_assigns_a_bed_to_a_device_through_an_autocomplete(admin_browser: Client) -> None:
    bed = factories.bed(factories.ward(code="icu"), "B3")
    factories.bed()
    # The form does not load every bed of the hospital into a select...
    page = admin_browser.get(reverse("admin:monitoring_device_add")).content.decode()
    assert "data-ajax--url" in page
    assert f'value="{bed.pk}"' not in page
    # ...it asks for the matching ones.
    found = admin_browser.get(
        reverse("admin:autocomplete"),
        {"term": "icu B3", "app_label": "monitoring", "model_name": "device", "field_name": "bed"},
    ).json()
    assert [r["id"] for r in found["results"]] == [str(bed.pk)]


# Observations ---------------------------------------------------------------------------------


def test_it_refuses_to_add_change_or_delete_observations(admin_browser: Client) -> None:
    _observation(factories.device(), None)
    observation = Observation.objects.get()
    change = reverse("admin:monitoring_observation_change", args=[observation.pk])
    delete = reverse("admin:monitoring_observation_delete", args=[observation.pk])

    assert admin_browser.get(reverse("admin:monitoring_observation_add")).status_code == 403
    assert admin_browser.get(change).status_code == 200  # viewable, read-only
    assert admin_browser.post(change, {"value": "999"}).status_code == 403
    assert admin_browser.post(delete, {"post": "yes"}).status_code == 403
    observation.refresh_from_db()
    assert observation.value == 72


def test_it_shows_unassigned_readings_and_filters_by_code(admin_browser: Client) -> None:
    admitted = factories.admitted_patient()
    at_bed = factories.device(admitted.bed, serial="SN-BED")
    loose = factories.device(serial="SN-LOOSE")
    _observation(at_bed, admitted.patient)
    _observation(loose, None)
    _observation(at_bed, admitted.patient, code=SPO2.code)

    def listed(**query: object) -> list[tuple[str, str]]:
        response = admin_browser.get(OBSERVATIONS, query)
        assert response.status_code == 200
        return sorted((o.device.serial, o.code) for o in response.context["cl"].result_list)

    assert listed(unassigned="yes") == [("SN-LOOSE", HEART_RATE.code)]
    assert listed(code__exact=SPO2.code) == [("SN-BED", SPO2.code)]
    assert len(listed()) == 3


# Query counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?active__exact=1", "?q=SN"])
def test_it_lists_devices_with_as_many_queries_for_one_row_as_for_hundreds(
    admin_browser: Client, query: str
) -> None:
    factories.device(factories.bed())
    with_one = _queries(admin_browser, DEVICES + query)

    wards = [factories.ward() for _ in range(5)]
    beds = Bed.objects.bulk_create(
        Bed(ward=wards[n % len(wards)], label=f"bulk-{n}") for n in range(200)
    )
    Device.objects.bulk_create(
        Device(serial=f"SN-BULK-{n:04d}", bed=bed, token_hint="dev_abcd")
        for n, bed in enumerate(beds)
    )

    assert _queries(admin_browser, DEVICES + query) == with_one


@pytest.mark.parametrize("query", ["", "?unassigned=yes", f"?code__exact={HEART_RATE.code}"])
def test_it_lists_observations_with_as_many_queries_for_one_row_as_for_hundreds(
    admin_browser: Client, query: str
) -> None:
    device = factories.device(factories.bed())
    _observation(device, None)
    with_one = _queries(admin_browser, OBSERVATIONS + query)

    admissions = [factories.admitted_patient() for _ in range(10)]
    devices = [factories.device(admission.bed) for admission in admissions]
    now = timezone.now()
    Observation.objects.bulk_create(
        Observation(
            device=devices[n % 10],
            patient=admissions[n % 10].patient if n % 3 else None,
            code=HEART_RATE.code,
            value=60 + n % 40,
            unit=HEART_RATE.unit,
            observed_at=now,
            received_at=now,
        )
        for n in range(200)
    )

    assert _queries(admin_browser, OBSERVATIONS + query) == with_one


@pytest.mark.django_db
def test_it_lists_device_messages_awaiting_evaluation_read_only() -> None:
    device = factories.device()
    now = timezone.now()
    pending = IngestMessage.objects.create(
        device=device,
        message_id="pending-1",
        body_digest="0" * 64,
        response={},
        observation_count=6,
        received_at=now,
    )
    IngestMessage.objects.create(
        device=device,
        message_id="done-1",
        body_digest="1" * 64,
        response={},
        observation_count=6,
        received_at=now,
        evaluated_at=now,
    )
    client = Client()
    client.force_login(factories.administrator())
    page = client.get("/admin/monitoring/ingestmessage/?evaluated=no")
    assert page.status_code == 200
    assert "pending-1" in page.text and "done-1" not in page.text
    assert client.get("/admin/monitoring/ingestmessage/add/").status_code == 403
    assert client.post(f"/admin/monitoring/ingestmessage/{pending.pk}/delete/").status_code == 403
