"""The patient and admission lists cost the same number of queries for 1 row or 10,000."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from patients.models import Admission, Bed, Patient, Ward
from tests import factories

pytestmark = pytest.mark.django_db

PATIENTS = reverse("admin:patients_patient_changelist")
ADMISSIONS = reverse("admin:patients_admission_changelist")


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


def _many_patients_with_stays(*, ward: Ward, patients: int, beds: int) -> None:
    """``patients`` patients; the first ``beds`` are admitted, the next ``beds`` discharged."""
    now = timezone.now()
    new_beds = Bed.objects.bulk_create(Bed(ward=ward, label=f"bulk-{n}") for n in range(beds))
    new_patients = Patient.objects.bulk_create(
        (
            Patient(
                mrn=f"BULK{n:07d}",
                family_name=f"Bulk{n}",
                given_name="Patient",
                date_of_birth=dt.date(1940, 1, 1) + dt.timedelta(days=n % 20000),
            )
            for n in range(patients)
        ),
        batch_size=2000,
    )
    # MariaDB returns the new primary keys (INSERT ... RETURNING), so bulk_create sets them.
    patient_ids = [patient.pk for patient in new_patients]
    stays = [
        Admission(patient_id=patient_ids[n], bed=bed, admitted_at=now - dt.timedelta(days=1))
        for n, bed in enumerate(new_beds)
    ]
    stays += [
        Admission(
            patient_id=patient_ids[beds + n],
            bed=bed,
            admitted_at=now - dt.timedelta(days=3),
            discharged_at=now - dt.timedelta(days=2),
            end_reason=Admission.EndReason.DISCHARGED,
        )
        for n, bed in enumerate(new_beds)
    ]
    Admission.objects.bulk_create(stays, batch_size=2000)


@pytest.mark.parametrize(
    "query",
    ["", "?admitted=yes", "?admitted=no", "?ward=icu", "?q=Bulk1", "?o=5", "?o=-6.1"],
)
def test_it_lists_10000_patients_with_as_many_queries_as_one(
    admin_browser: Client, query: str
) -> None:
    icu = factories.ward(code="icu")
    factories.admitted_patient(factories.bed(icu))
    url = PATIENTS + query
    with_one = _queries(admin_browser, url)

    _many_patients_with_stays(ward=icu, patients=10_000, beds=150)
    assert Patient.objects.count() == 10_001

    assert _queries(admin_browser, url) == with_one


@pytest.mark.parametrize("query", ["", "?state=open", "?state=closed", "?q=BULK00001"])
def test_it_lists_admissions_with_as_many_queries_for_one_row_as_for_hundreds(
    admin_browser: Client, query: str
) -> None:
    icu = factories.ward(code="icu")
    factories.admitted_patient(factories.bed(icu))
    url = ADMISSIONS + query
    with_one = _queries(admin_browser, url)

    _many_patients_with_stays(ward=factories.ward(), patients=400, beds=200)
    assert Admission.objects.count() == 401

    assert _queries(admin_browser, url) == with_one
