"""The only code that admits, transfers and discharges patients.

Invariants (enforced by MariaDB, see ``Admission``): a patient has at most one open admission
and a bed holds at most one. The pre-checks here only make the refusal readable; the unique
indexes decide races, and their violation is turned into the same readable refusal.
"""

from __future__ import annotations

from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from patients.models import Admission, Bed, Patient


class AdmissionRefused(Exception):
    """A requested admission change that would break an invariant. ``code`` is stable."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


_CONSTRAINT_REFUSALS = {
    "one_open_admission_per_patient": (
        "patient_already_admitted",
        "The patient already has an open admission.",
    ),
    "one_open_admission_per_bed": ("bed_occupied", "The bed already holds an admitted patient."),
}


def _refusal_from(error: IntegrityError) -> AdmissionRefused:
    message = str(error)
    for constraint, (code, detail) in _CONSTRAINT_REFUSALS.items():
        if constraint in message:
            return AdmissionRefused(code, detail)
    raise error


def _refuse_if_taken(*, patient: Patient, bed: Bed, ignoring: Admission | None = None) -> None:
    open_admissions = Admission.objects.filter(discharged_at__isnull=True)
    if ignoring is not None:
        open_admissions = open_admissions.exclude(pk=ignoring.pk)
    current = open_admissions.filter(patient=patient).select_related("bed__ward").first()
    if current is not None:
        raise AdmissionRefused(
            "patient_already_admitted",
            f"The patient is already admitted to bed {current.bed}; transfer or discharge them "
            "first.",
        )
    if open_admissions.filter(bed=bed).exists():
        raise AdmissionRefused(
            "bed_occupied", f"Bed {bed} already holds an admitted patient; discharge them first."
        )


def admission_create(
    *, patient: Patient, bed: Bed, admitted_at: datetime | None = None
) -> Admission:
    """Admit ``patient`` to ``bed``. Refused if either already has an open admission."""
    try:
        with transaction.atomic():
            _refuse_if_taken(patient=patient, bed=bed)
            return Admission.objects.create(
                patient=patient, bed=bed, admitted_at=admitted_at or timezone.now()
            )
    except IntegrityError as error:
        raise _refusal_from(error) from error


def admission_discharge(
    *,
    admission: Admission,
    at: datetime | None = None,
    reason: Admission.EndReason = Admission.EndReason.DISCHARGED,
) -> Admission:
    """Close an open admission. Compare-and-set, so a double discharge is refused, not repeated."""
    at = at or timezone.now()
    if at < admission.admitted_at:
        raise AdmissionRefused("discharge_before_admission", "Discharge precedes the admission.")
    closed = Admission.objects.filter(pk=admission.pk, discharged_at__isnull=True).update(
        discharged_at=at, end_reason=reason
    )
    if closed != 1:
        raise AdmissionRefused("not_admitted", "This admission is already closed.")
    admission.refresh_from_db()
    return admission


def admission_transfer(*, admission: Admission, to_bed: Bed) -> Admission:
    """Move an admitted patient to ``to_bed``: the stay ends and a new one opens at one instant.

    Both happen in one transaction, so the patient is never without a bed nor in two.
    """
    if to_bed.pk == admission.bed_id:
        raise AdmissionRefused("same_bed", "The patient is already in that bed.")
    try:
        with transaction.atomic():
            _refuse_if_taken(patient=admission.patient, bed=to_bed, ignoring=admission)
            now = timezone.now()
            admission_discharge(admission=admission, at=now, reason=Admission.EndReason.TRANSFERRED)
            return Admission.objects.create(patient=admission.patient, bed=to_bed, admitted_at=now)
    except IntegrityError as error:
        raise _refusal_from(error) from error
