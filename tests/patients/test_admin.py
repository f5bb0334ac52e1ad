"""The administrators' admin for patients, admissions, wards and ward access."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from patients.models import Admission, Bed, Patient, WardAccess
from patients.services import admission_discharge
from tests import factories

if TYPE_CHECKING:
    # The test client's response type (context, redirect_chain...), known to django-stubs only.
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db

PATIENTS = reverse("admin:patients_patient_changelist")
ADMISSIONS = reverse("admin:patients_admission_changelist")


@pytest.fixture
def administrator() -> User:
    return factories.administrator()


@pytest.fixture
def admin_browser(administrator: User) -> Client:
    # A Client of its own, not pytest-django's ``client`` fixture, which a conftest may replace.
    browser = Client()
    browser.force_login(administrator)
    return browser


def _listed_mrns(response: Response) -> list[str]:
    assert response.status_code == 200
    return sorted(p.mrn for p in response.context["cl"].result_list)


def _cells(response: Response, column: str) -> list[str]:
    """The texts of the changelist's cells of ``column``, row by row."""
    assert response.status_code == 200
    return re.findall(rf'<td class="field-{column}">(.*?)</td>', response.content.decode())


def _messages(response: Response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _act(
    browser: Client, action: str, *patients: Patient, confirm: bool = False, **form: object
) -> Response:
    data: dict[str, object] = {"action": action, "_selected_action": [p.pk for p in patients]}
    if confirm:
        data["apply"] = "yes"
    data.update(form)
    return browser.post(PATIENTS, data, follow=True)


# Finding patients -----------------------------------------------------------------------------


def test_it_finds_a_patient_by_mrn(admin_browser: Client) -> None:
    factories.patient(mrn="H1000001")
    wanted = factories.patient(mrn="H2000002")
    assert _listed_mrns(admin_browser.get(PATIENTS, {"q": "H2000002"})) == [wanted.mrn]
    assert _listed_mrns(admin_browser.get(PATIENTS, {"q": "h2000"})) == [wanted.mrn]


def test_it_finds_a_patient_by_family_or_given_name(admin_browser: Client) -> None:
    factories.patient(family_name="Okafor", given_name="Ada")
    wanted = factories.patient(family_name="Lindqvist", given_name="Maja")
    assert _listed_mrns(admin_browser.get(PATIENTS, {"q": "lindq"})) == [wanted.mrn]
    assert _listed_mrns(admin_browser.get(PATIENTS, {"q": "Maja"})) == [wanted.mrn]
    assert _listed_mrns(admin_browser.get(PATIENTS, {"q": "Maja Lindqvist"})) == [wanted.mrn]


@pytest.fixture
def four_patients() -> dict[str, Patient]:
    """In ICU now; in cardiology now; discharged from ICU; never admitted."""
    icu, cardiology = factories.ward(code="icu"), factories.ward(code="cardio")
    in_icu = factories.admitted_patient(factories.bed(icu, "I1"))
    in_cardiology = factories.admitted_patient(factories.bed(cardiology, "C1"))
    left_icu = factories.admitted_patient(factories.bed(icu, "I2"))
    admission_discharge(admission=left_icu)
    return {
        "in_icu": in_icu.patient,
        "in_cardiology": in_cardiology.patient,
        "left_icu": left_icu.patient,
        "never_admitted": factories.patient(),
    }


def test_it_filters_patients_by_the_ward_they_are_in_now(
    admin_browser: Client, four_patients: dict[str, Patient]
) -> None:
    listed = _listed_mrns(admin_browser.get(PATIENTS, {"ward": "icu"}))
    assert listed == [four_patients["in_icu"].mrn]
    listed = _listed_mrns(admin_browser.get(PATIENTS, {"ward": "cardio"}))
    assert listed == [four_patients["in_cardiology"].mrn]


def test_it_filters_admitted_and_not_admitted_patients(
    admin_browser: Client, four_patients: dict[str, Patient]
) -> None:
    admitted = _listed_mrns(admin_browser.get(PATIENTS, {"admitted": "yes"}))
    assert admitted == sorted([four_patients["in_icu"].mrn, four_patients["in_cardiology"].mrn])
    not_admitted = _listed_mrns(admin_browser.get(PATIENTS, {"admitted": "no"}))
    assert not_admitted == sorted(
        [four_patients["left_icu"].mrn, four_patients["never_admitted"].mrn]
    )


def test_it_lists_each_patient_with_their_current_ward_and_bed(
    admin_browser: Client, four_patients: dict[str, Patient]
) -> None:
    response = admin_browser.get(PATIENTS, {"q": four_patients["in_cardiology"].mrn})
    assert _cells(response, "current_ward") == ["cardio"]
    assert _cells(response, "current_bed") == ["C1"]
    response = admin_browser.get(PATIENTS, {"q": four_patients["left_icu"].mrn})
    # The ICU bed they left is history, not their current bed. (The cells, not the page: a
    # CSRF token or CSP nonce on the page may contain "I2" by chance.)
    assert _cells(response, "current_ward") == ["-"]
    assert _cells(response, "current_bed") == ["-"]


# Admit, transfer, discharge -------------------------------------------------------------------


def test_it_admits_a_patient_to_a_bed_chosen_on_an_intermediate_page(
    admin_browser: Client,
) -> None:
    patient, bed = factories.patient(), factories.bed(label="B7")
    taken = factories.admitted_patient().bed

    page = _act(admin_browser, "admit", patient)
    assert page.status_code == 200
    offered = set(page.context["form"].fields["bed"].queryset)
    assert bed in offered
    assert taken not in offered

    done = _act(admin_browser, "admit", patient, confirm=True, bed=bed.pk)
    assert done.redirect_chain[-1][0].startswith(PATIENTS)
    assert _messages(done) == [f"Patient {patient.mrn} admitted to bed {bed}."]
    admission = Admission.objects.get(patient=patient)
    assert admission.is_open
    assert admission.bed == bed


def test_it_refuses_an_occupied_bed_with_the_services_reason(admin_browser: Client) -> None:
    patient, occupied = factories.patient(), factories.admitted_patient().bed

    done = _act(admin_browser, "admit", patient, confirm=True, bed=occupied.pk)

    assert done.status_code == 200
    assert _messages(done) == [
        f"Bed {occupied} already holds an admitted patient; discharge them first."
    ]
    assert not Admission.objects.filter(patient=patient).exists()


def test_it_refuses_to_admit_a_patient_who_is_already_admitted(admin_browser: Client) -> None:
    admission = factories.admitted_patient()
    done = _act(admin_browser, "admit", admission.patient, confirm=True, bed=factories.bed().pk)
    assert "already admitted" in _messages(done)[0]
    assert Admission.objects.filter(patient=admission.patient).count() == 1


def test_it_admits_exactly_one_patient_at_a_time(admin_browser: Client) -> None:
    first, second, bed = factories.patient(), factories.patient(), factories.bed()
    done = _act(admin_browser, "admit", first, second, confirm=True, bed=bed.pk)
    assert _messages(done) == [
        "Admitting acts on exactly one patient: select only that patient and try again."
    ]
    assert not Admission.objects.exists()


def test_it_transfers_a_patient_closing_the_old_stay_and_opening_a_new_one(
    admin_browser: Client,
) -> None:
    old = factories.admitted_patient()
    new_bed = factories.bed()

    page = _act(admin_browser, "transfer", old.patient)
    assert page.status_code == 200
    assert str(old.bed) in page.content.decode()

    done = _act(admin_browser, "transfer", old.patient, confirm=True, bed=new_bed.pk)

    assert _messages(done) == [
        f"Patient {old.patient.mrn} transferred from bed {old.bed} to bed {new_bed}."
    ]
    old.refresh_from_db()
    assert old.end_reason == Admission.EndReason.TRANSFERRED
    assert not old.is_open
    current = Admission.objects.get(patient=old.patient, discharged_at__isnull=True)
    assert current.bed == new_bed


def test_it_refuses_a_transfer_into_an_occupied_bed(admin_browser: Client) -> None:
    moving, staying = factories.admitted_patient(), factories.admitted_patient()
    done = _act(admin_browser, "transfer", moving.patient, confirm=True, bed=staying.bed.pk)
    assert _messages(done) == [
        f"Bed {staying.bed} already holds an admitted patient; discharge them first."
    ]
    moving.refresh_from_db()
    assert moving.is_open


def test_it_refuses_to_transfer_a_patient_who_is_not_admitted(admin_browser: Client) -> None:
    patient = factories.patient()
    done = _act(admin_browser, "transfer", patient, confirm=True, bed=factories.bed().pk)
    assert "is not admitted" in _messages(done)[0]
    assert not Admission.objects.exists()


def test_it_discharges_the_selected_patients_after_confirmation(admin_browser: Client) -> None:
    first, second = factories.admitted_patient(), factories.admitted_patient()
    never_admitted = factories.patient()

    page = _act(admin_browser, "discharge", first.patient, second.patient, never_admitted)
    assert page.status_code == 200
    assert str(first.bed) in page.content.decode()
    assert Admission.objects.filter(discharged_at__isnull=True).count() == 2

    done = _act(
        admin_browser, "discharge", first.patient, second.patient, never_admitted, confirm=True
    )

    assert _messages(done) == ["Discharged 2 patients."]
    for admission in (first, second):
        admission.refresh_from_db()
        assert admission.end_reason == Admission.EndReason.DISCHARGED
    assert not Admission.objects.filter(discharged_at__isnull=True).exists()


def test_it_says_so_when_nobody_selected_is_admitted(admin_browser: Client) -> None:
    done = _act(admin_browser, "discharge", factories.patient(), confirm=True)
    assert _messages(done) == ["None of the selected patients is admitted."]


# Read-only admissions -------------------------------------------------------------------------


def test_it_shows_admissions_on_the_patient_page_read_only(admin_browser: Client) -> None:
    admission = factories.admitted_patient()
    patient = admission.patient
    url = reverse("admin:patients_patient_change", args=[patient.pk])
    response = admin_browser.get(url)
    assert str(admission.bed) in response.content.decode()
    (inline,) = [i for i in response.context["inline_admin_formsets"] if i.opts.model is Admission]
    assert not (inline.has_add_permission or inline.has_change_permission)
    assert not inline.has_delete_permission

    # A hand-made POST that tries to move the stay through the patient form changes nothing.
    other_bed = factories.bed()
    admin_browser.post(
        url,
        {
            "mrn": patient.mrn,
            "family_name": patient.family_name,
            "given_name": patient.given_name,
            "date_of_birth": patient.date_of_birth.isoformat(),
            "sex": patient.sex,
            "admissions-TOTAL_FORMS": "2",
            "admissions-INITIAL_FORMS": "1",
            "admissions-0-id": admission.pk,
            "admissions-0-patient": patient.pk,
            "admissions-0-bed": other_bed.pk,
            "admissions-0-DELETE": "on",
            "admissions-1-patient": patient.pk,
            "admissions-1-bed": other_bed.pk,
        },
    )
    admission.refresh_from_db()
    assert admission.bed != other_bed
    assert Admission.objects.filter(patient=patient).count() == 1


def test_it_never_lets_an_admission_be_added_changed_or_deleted_directly(
    admin_browser: Client,
) -> None:
    admission = factories.admitted_patient()
    change = reverse("admin:patients_admission_change", args=[admission.pk])
    assert admin_browser.get(reverse("admin:patients_admission_add")).status_code == 403
    assert admin_browser.get(change).status_code == 200  # viewable, read-only
    other_bed = factories.bed()
    admin_browser.post(change, {"bed": other_bed.pk, "patient": admission.patient.pk})
    delete = reverse("admin:patients_admission_delete", args=[admission.pk])
    assert admin_browser.post(delete, {"post": "yes"}).status_code == 403
    admission.refresh_from_db()
    assert admission.bed != other_bed
    assert admission.is_open


def test_it_filters_admissions_by_state_and_ward(admin_browser: Client) -> None:
    icu = factories.ward(code="icu")
    open_in_icu = factories.admitted_patient(factories.bed(icu))
    closed_in_icu = factories.admitted_patient(factories.bed(icu))
    admission_discharge(admission=closed_in_icu)
    open_elsewhere = factories.admitted_patient()

    def listed(**query: object) -> set[int]:
        response = admin_browser.get(ADMISSIONS, query)
        assert response.status_code == 200
        return {a.pk for a in response.context["cl"].result_list}

    assert listed(state="open") == {open_in_icu.pk, open_elsewhere.pk}
    assert listed(state="closed") == {closed_in_icu.pk}
    assert listed(bed__ward__id__exact=icu.pk) == {open_in_icu.pk, closed_in_icu.pk}


# Wards and ward access ------------------------------------------------------------------------


def test_it_records_the_administrator_who_granted_ward_access(
    admin_browser: Client, administrator: User
) -> None:
    clinician, ward = factories.clinician(), factories.ward()
    response = admin_browser.post(
        reverse("admin:patients_wardaccess_add"), {"user": clinician.pk, "ward": ward.pk}
    )
    assert response.status_code == 302
    access = WardAccess.objects.get(user=clinician, ward=ward)
    assert access.granted_by == administrator


def test_it_records_the_grantor_of_access_added_on_the_ward_page(
    admin_browser: Client, administrator: User
) -> None:
    ward, clinician = factories.ward(), factories.clinician()
    response = admin_browser.post(
        reverse("admin:patients_ward_change", args=[ward.pk]),
        {
            "code": ward.code,
            "name": ward.name,
            "escalation_seconds": "60",
            "beds-TOTAL_FORMS": "1",
            "beds-INITIAL_FORMS": "0",
            "beds-0-label": "B1",
            "accesses-TOTAL_FORMS": "1",
            "accesses-INITIAL_FORMS": "0",
            "accesses-0-user": clinician.pk,
        },
    )
    assert response.status_code == 302
    assert Bed.objects.get(ward=ward).label == "B1"
    assert WardAccess.objects.get(ward=ward, user=clinician).granted_by == administrator


def test_it_opens_the_list_of_every_patients_model(admin_browser: Client) -> None:
    admission = factories.admitted_patient()
    factories.clinician(admission.bed.ward)
    for model in ("ward", "bed", "wardaccess", "patient", "admission"):
        response = admin_browser.get(reverse(f"admin:patients_{model}_changelist"))
        assert response.status_code == 200, model
    bed_list = admin_browser.get(reverse("admin:patients_bed_changelist")).content.decode()
    assert admission.patient.mrn in bed_list  # who is in each bed now


# Who may enter --------------------------------------------------------------------------------


def test_it_keeps_a_clinician_who_is_not_staff_out_of_the_admin() -> None:
    client = Client()
    client.force_login(factories.clinician(factories.ward()))
    for url in (reverse("admin:index"), PATIENTS, ADMISSIONS):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    patient = factories.patient()
    client.post(PATIENTS, {"action": "admit", "_selected_action": [patient.pk]})
    assert not Admission.objects.exists()
