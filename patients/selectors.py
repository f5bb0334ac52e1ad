"""Reads of wards, beds and patients, always scoped to the user who asks."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Exists, OuterRef, Prefetch, QuerySet, Subquery

from patients.models import Admission, Bed, Patient, Ward

User = AbstractBaseUser | AnonymousUser


def user_sees_all_wards(*, user: User) -> bool:
    """Administrators (superusers, or holders of ``patients.view_all_wards``) see every ward."""
    return bool(user.is_active and user.has_perm("patients.view_all_wards"))


def wards_visible_to(*, user: User) -> QuerySet[Ward]:
    if not user.is_authenticated or not user.is_active:
        return Ward.objects.none()
    if user_sees_all_wards(user=user):
        return Ward.objects.all()
    return Ward.objects.filter(accesses__user=user)


def ward_visible_to(*, user: User, ward_code: str) -> Ward | None:
    return wards_visible_to(user=user).filter(code=ward_code).first()


def beds_with_current_admission(*, ward: Ward) -> QuerySet[Bed]:
    """The ward's beds, each with ``current_admissions`` (0 or 1 open admission, with patient)."""
    open_admissions = Admission.objects.filter(discharged_at__isnull=True).select_related("patient")
    return (
        Bed.objects.filter(ward=ward)
        .order_by("label")
        .prefetch_related(
            Prefetch("admissions", queryset=open_admissions, to_attr="current_admissions")
        )
    )


def ward_beds_and_patients(*, ward: Ward) -> tuple[list[Bed], dict[int, Patient]]:
    """The ward's beds in label order, and the patient admitted to each (by bed pk)."""
    beds = list(beds_with_current_admission(ward=ward))
    patients = {bed.pk: bed.current_admissions[0].patient for bed in beds if bed.current_admissions}
    return beds, patients


def open_admission_subquery(*, field: str) -> Subquery:
    """A subquery over Patient rows giving ``field`` of the patient's open admission."""
    return Subquery(
        Admission.objects.filter(patient=OuterRef("pk"), discharged_at__isnull=True).values(field)[
            :1
        ]
    )


def beds_free() -> QuerySet[Bed]:
    """Beds that hold no open admission now, with their ward (``str(bed)`` reads it)."""
    occupied = Admission.objects.filter(bed=OuterRef("pk"), discharged_at__isnull=True)
    return (
        Bed.objects.filter(~Exists(occupied)).select_related("ward").order_by("ward__code", "label")
    )


def patients_visible_to(*, user: User) -> QuerySet[Patient]:
    """Patients admitted now to a ward the user may see (administrators: every patient)."""
    if not user.is_authenticated or not user.is_active:
        return Patient.objects.none()
    if user_sees_all_wards(user=user):
        return Patient.objects.all()
    return Patient.objects.filter(
        admissions__discharged_at__isnull=True,
        admissions__bed__ward__in=wards_visible_to(user=user),
    )


def beds_visible_to(*, user: User) -> QuerySet[Bed]:
    return Bed.objects.filter(ward__in=wards_visible_to(user=user))


def admissions_visible_to(*, user: User) -> QuerySet[Admission]:
    """Admissions of the wards the user may see (open and closed); administrators: all."""
    if user_sees_all_wards(user=user):
        return Admission.objects.all()
    return Admission.objects.filter(bed__ward__in=wards_visible_to(user=user))
