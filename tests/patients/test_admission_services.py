"""Admissions: one open admission per patient and per bed, enforced by MariaDB."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from patients.models import Admission, Bed, Patient
from patients.services import (
    AdmissionRefused,
    admission_create,
    admission_discharge,
    admission_transfer,
)
from tests import factories


def _race(*attempts: Callable[[], object]) -> tuple[list[object], list[BaseException]]:
    """Run the attempts in threads (each its own MariaDB connection), released together."""
    barrier = threading.Barrier(len(attempts))
    results: list[object] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(attempt: Callable[[], object]) -> None:
        try:
            barrier.wait(timeout=10)
            outcome = attempt()
            with lock:
                results.append(outcome)
        except BaseException as error:
            with lock:
                errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(attempt,)) for attempt in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    close_old_connections()
    return results, errors


@pytest.mark.django_db
def test_it_admits_a_patient_to_a_free_bed() -> None:
    patient, bed = factories.patient(), factories.bed()
    admission = admission_create(patient=patient, bed=bed)
    assert admission.is_open
    assert Admission.objects.get(open_patient=patient.pk).bed == bed


@pytest.mark.django_db
def test_it_refuses_a_second_open_admission_for_a_patient_with_a_reason() -> None:
    first = factories.admitted_patient()
    with pytest.raises(AdmissionRefused) as refused:
        admission_create(patient=first.patient, bed=factories.bed())
    assert refused.value.code == "patient_already_admitted"
    assert str(first.bed) in refused.value.detail
    assert Admission.objects.filter(patient=first.patient).count() == 1


@pytest.mark.django_db
def test_it_refuses_an_occupied_bed() -> None:
    first = factories.admitted_patient()
    with pytest.raises(AdmissionRefused) as refused:
        admission_create(patient=factories.patient(), bed=first.bed)
    assert refused.value.code == "bed_occupied"


@pytest.mark.django_db
def test_it_lets_discharged_admissions_of_a_bed_and_patient_accumulate() -> None:
    bed, patient = factories.bed(), factories.patient()
    for _ in range(3):
        admission = admission_create(patient=patient, bed=bed)
        admission_discharge(admission=admission)
    assert Admission.objects.filter(bed=bed, discharged_at__isnull=False).count() == 3
    assert admission_create(patient=patient, bed=bed).is_open


@pytest.mark.django_db
def test_it_enforces_one_open_admission_in_the_database_itself() -> None:
    """Bypassing the service's pre-checks, MariaDB still refuses a second open admission."""
    first = factories.admitted_patient()
    with pytest.raises(IntegrityError, match="one_open_admission_per_bed"), transaction.atomic():
        Admission.objects.create(
            patient=factories.patient(), bed=first.bed, admitted_at=timezone.now()
        )
    with (
        pytest.raises(IntegrityError, match="one_open_admission_per_patient"),
        transaction.atomic(),
    ):
        Admission.objects.create(
            patient=first.patient, bed=factories.bed(), admitted_at=timezone.now()
        )


@pytest.mark.django_db
def test_it_refuses_a_discharge_before_the_admission_or_twice() -> None:
    admission = factories.admitted_patient()
    with pytest.raises(AdmissionRefused) as early:
        admission_discharge(admission=admission, at=admission.admitted_at.replace(year=2000))
    assert early.value.code == "discharge_before_admission"
    admission_discharge(admission=admission)
    with pytest.raises(AdmissionRefused) as twice:
        admission_discharge(admission=admission)
    assert twice.value.code == "not_admitted"


@pytest.mark.django_db
def test_it_transfers_in_one_step() -> None:
    admission = factories.admitted_patient()
    to_bed = factories.bed()
    new = admission_transfer(admission=admission, to_bed=to_bed)
    admission.refresh_from_db()
    assert admission.end_reason == Admission.EndReason.TRANSFERRED
    assert new.bed == to_bed and new.is_open
    assert new.admitted_at == admission.discharged_at


@pytest.mark.django_db
def test_it_refuses_a_transfer_to_an_occupied_bed_and_keeps_the_patient_in_place() -> None:
    admission = factories.admitted_patient()
    occupied = factories.admitted_patient()
    with pytest.raises(AdmissionRefused) as refused:
        admission_transfer(admission=admission, to_bed=occupied.bed)
    assert refused.value.code == "bed_occupied"
    admission.refresh_from_db()
    assert admission.is_open


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_two_concurrent_admissions_of_a_patient_succeed() -> None:
    patient = factories.patient()
    bed_a, bed_b = factories.bed(), factories.bed()

    def admit_to(bed: Bed) -> Callable[[], Admission]:
        return lambda: admission_create(patient=Patient.objects.get(pk=patient.pk), bed=bed)

    results, errors = _race(admit_to(bed_a), admit_to(bed_b))
    assert len(results) == 1
    assert len(errors) == 1 and isinstance(errors[0], AdmissionRefused)
    assert errors[0].code == "patient_already_admitted"
    assert Admission.objects.filter(patient=patient, discharged_at__isnull=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_two_concurrent_admissions_to_a_bed_succeed() -> None:
    bed = factories.bed()
    patients = [factories.patient(), factories.patient()]

    def admit(patient: Patient) -> Callable[[], Admission]:
        return lambda: admission_create(patient=patient, bed=Bed.objects.get(pk=bed.pk))

    results, errors = _race(*(admit(p) for p in patients))
    assert len(results) == 1
    assert len(errors) == 1 and isinstance(errors[0], AdmissionRefused)
    assert errors[0].code == "bed_occupied"
    assert Admission.objects.filter(bed=bed, discharged_at__isnull=True).count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_lets_the_unique_index_alone_decide_a_race_of_raw_inserts() -> None:
    """Two raw inserts, both past any application check: exactly one commits."""
    bed = factories.bed()
    patients = [factories.patient(), factories.patient()]
    gate = threading.Barrier(2)

    def insert(patient: Patient) -> Callable[[], Admission]:
        def attempt() -> Admission:
            with transaction.atomic():
                gate.wait(timeout=10)  # both transactions open before either inserts
                return Admission.objects.create(
                    patient=patient, bed_id=bed.pk, admitted_at=timezone.now()
                )

        return attempt

    results, errors = _race(*(insert(p) for p in patients))
    assert len(results) == 1
    assert len(errors) == 1 and isinstance(errors[0], IntegrityError)
    assert Admission.objects.filter(bed=bed, discharged_at__isnull=True).count() == 1
