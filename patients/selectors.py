"""Reads of wards, beds and patients, always scoped to the user who asks."""

from __future__ import annotations

import enum
import functools

from django.contrib.auth import get_user_model
from django.contrib.auth.models import (
    AbstractBaseUser,
    AnonymousUser,
    Group,
    Permission,
    PermissionsMixin,
)
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.db.models import (
    Exists,
    ManyToManyField,
    Model,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
)

from config.rawsql import column_sql, table_sql
from patients.models import Admission, Bed, Patient, Ward, WardAccess

User = AbstractBaseUser | AnonymousUser


# The permission that shows every ward: (app label, codename).
ALL_WARDS_PERMISSION = ("patients", "view_all_wards")


def user_sees_all_wards(*, user: User) -> bool:
    """Administrators (superusers, or holders of ``patients.view_all_wards``) see every ward."""
    # has_perm comes with PermissionsMixin (auth.User has it); a user model without it, like
    # an anonymous user, holds no permission.
    return bool(
        user.is_active
        and isinstance(user, PermissionsMixin)
        and user.has_perm(".".join(ALL_WARDS_PERMISSION))
    )


def wards_visible_to(*, user: User) -> QuerySet[Ward]:
    if not user.is_authenticated or not user.is_active:
        return Ward.objects.none()
    if user_sees_all_wards(user=user):
        return Ward.objects.all()
    return Ward.objects.filter(accesses__user_id=user.pk)


def ward_visible_to(*, user: User, ward_code: str) -> Ward | None:
    return wards_visible_to(user=user).filter(code=ward_code).first()


class WardVisibility(enum.Enum):
    UNKNOWN_WARD = "unknown_ward"
    HIDDEN = "hidden"
    VISIBLE = "visible"


def ward_visibility(*, user_id: int, ward_code: str) -> WardVisibility:
    """``ward_visible_to``'s rule for one user and ward, decided in one statement.

    For the dashboards' WebSockets, which ask on every connect and every 30 s per open
    socket: the ORM's queries for the same answer (the ward, the user's permissions through
    ``has_perm``, the ward filter) cost ~1.8 ms of CPU per check against ~0.2 ms here, and a
    reconnect storm asks a thousand times in ten seconds (bench fanout). The rule is
    ``user_sees_all_wards`` and ``wards_visible_to`` under this project's authentication
    backends (django-axes, which grants no permission, and ``ModelBackend``): an active
    superuser, or an active user holding ``patients.view_all_wards`` directly or through a
    group, sees every ward; another active user the wards assigned to them. The user's flags
    are read from the database, not from the session's copy of the user, so a deactivated
    user loses access at the next check. ``tests/patients/test_ward_visibility.py`` compares
    it with the ORM rule across users of every kind.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            _ward_visibility_sql(connection.vendor),
            [ward_code, ward_code, *ALL_WARDS_PERMISSION, *ALL_WARDS_PERMISSION, user_id],
        )
        row = cursor.fetchone()
    if row is None:  # no such user (deleted since the session was read)
        ward_exists = Ward.objects.filter(code=ward_code).exists()
        return WardVisibility.HIDDEN if ward_exists else WardVisibility.UNKNOWN_WARD
    ward_id, active, superuser, assigned, permitted = row
    if ward_id is None:
        return WardVisibility.UNKNOWN_WARD
    if active and (superuser or assigned or permitted):
        return WardVisibility.VISIBLE
    return WardVisibility.HIDDEN


@functools.cache
def _through(model: type[Model], name: str) -> type[Model]:
    """The table behind ``model``'s many-to-many field ``name``."""
    field = model._meta.get_field(name)
    if not isinstance(field, ManyToManyField):
        raise TypeError(f"{model.__name__}.{name} is not a many-to-many field")
    through = field.remote_field.through
    if through is None:
        raise TypeError(f"{model.__name__}.{name} has no table of its own")
    return through


def _ward_visibility_sql(vendor: str) -> str:
    """The statement of ``ward_visibility``, built once per vendor from model metadata.

    Parameters: the ward code twice, the permission's app label and codename twice, the
    user's pk."""
    t, c = table_sql, column_sql
    user_model = get_user_model()
    user_perms = _through(user_model, "user_permissions")
    user_groups = _through(user_model, "groups")
    group_perms = _through(Group, "permissions")

    user_name = user_model._meta.model_name or "user"
    user_pk = c(user_model, "u", user_model._meta.pk.name)

    # The all-wards permission, given through ``alias`` (a table with a permission column).
    def permission_is(through: type[Model], alias: str) -> str:
        return (
            f" JOIN {t(Permission, 'p')} ON {c(Permission, 'p', 'id')} ="
            f" {c(through, alias, 'permission')}"
            f" JOIN {t(ContentType, 'ct')} ON {c(ContentType, 'ct', 'id')} ="
            f" {c(Permission, 'p', 'content_type')}"
            f" WHERE {c(ContentType, 'ct', 'app_label')} = %s"
            f" AND {c(Permission, 'p', 'codename')} = %s"
        )

    return (
        f"SELECT (SELECT {c(Ward, 'w', 'id')} FROM {t(Ward, 'w')}"  # noqa: S608 - names from model metadata
        f" WHERE {c(Ward, 'w', 'code')} = %s),"
        f" {c(user_model, 'u', 'is_active')}, {c(user_model, 'u', 'is_superuser')},"
        f" EXISTS (SELECT 1 FROM {t(WardAccess, 'a')} JOIN {t(Ward, 'aw')}"
        f" ON {c(Ward, 'aw', 'id')} = {c(WardAccess, 'a', 'ward')}"
        f" WHERE {c(WardAccess, 'a', 'user')} = {user_pk} AND {c(Ward, 'aw', 'code')} = %s),"
        f" EXISTS (SELECT 1 FROM {t(user_perms, 'up')}{permission_is(user_perms, 'up')}"
        f" AND {c(user_perms, 'up', user_name)} = {user_pk})"
        f" OR EXISTS (SELECT 1 FROM {t(user_groups, 'ug')} JOIN {t(group_perms, 'gp')}"
        f" ON {c(group_perms, 'gp', 'group')} = {c(user_groups, 'ug', 'group')}"
        f"{permission_is(group_perms, 'gp')} AND {c(user_groups, 'ug', user_name)} = {user_pk})"
        f" FROM {t(user_model, 'u')} WHERE {user_pk} = %s"
    )


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
    patients = {
        bed.pk: bed.current_admissions[0].patient  # type: ignore[attr-defined]  # Prefetch to_attr
        for bed in beds
        if bed.current_admissions  # type: ignore[attr-defined]
    }
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
