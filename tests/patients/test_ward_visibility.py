"""``ward_visibility`` (one statement, for the dashboards' sockets) decides as the ORM rule
(``ward_visible_to``) does, for users of every kind."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType

from patients.models import Ward
from patients.selectors import WardVisibility, ward_visibility, ward_visible_to
from tests import factories

pytestmark = pytest.mark.django_db


def _permission(codename: str) -> Permission:
    return Permission.objects.get(content_type__app_label="patients", codename=codename)


def _users(assigned: Ward) -> dict[str, User]:
    all_wards = _permission("view_all_wards")
    other_permission = _permission("view_patient")
    # The same codename in another app grants nothing here.
    namesake = Permission.objects.create(
        codename="view_all_wards",
        name="A namesake in another app",
        content_type=ContentType.objects.get_for_model(Group),
    )
    group_all = Group.objects.create(name="all wards")
    group_all.permissions.add(all_wards)
    group_other = Group.objects.create(name="other permission")
    group_other.permissions.add(other_permission)
    group_namesake = Group.objects.create(name="namesake")
    group_namesake.permissions.add(namesake)

    users = {
        "superuser": factories.administrator(),
        "inactive superuser": factories.administrator(),
        "assigned clinician": factories.clinician(assigned),
        "inactive assigned clinician": factories.clinician(assigned),
        "unassigned clinician": factories.clinician(),
        "permission held directly": factories.clinician(),
        "inactive permission holder": factories.clinician(),
        "permission through a group": factories.clinician(),
        "inactive, permission through a group": factories.clinician(),
        "namesake permission directly": factories.clinician(),
        "namesake permission through a group": factories.clinician(),
        "another permission directly": factories.clinician(),
        "another permission through a group": factories.clinician(),
        "staff without permission": factories.clinician(),
    }
    for name in (
        "inactive superuser",
        "inactive assigned clinician",
        "inactive permission holder",
        "inactive, permission through a group",
    ):
        users[name].is_active = False
        users[name].save(update_fields=["is_active"])
    users["permission held directly"].user_permissions.add(all_wards)
    users["inactive permission holder"].user_permissions.add(all_wards)
    users["permission through a group"].groups.add(group_all)
    users["inactive, permission through a group"].groups.add(group_all)
    users["namesake permission directly"].user_permissions.add(namesake)
    users["namesake permission through a group"].groups.add(group_namesake)
    users["another permission directly"].user_permissions.add(other_permission)
    users["another permission through a group"].groups.add(group_other)
    users["staff without permission"].is_staff = True
    users["staff without permission"].save(update_fields=["is_staff"])
    return users


def test_it_decides_as_the_orm_rule_for_every_kind_of_user_and_ward() -> None:
    assigned, other = factories.ward(), factories.ward()
    users = _users(assigned)
    decided = {}
    for name, user in users.items():
        for ward_code in (assigned.code, other.code, "no-such-ward"):
            fresh = User.objects.get(pk=user.pk)  # no permission cache carried over
            if not Ward.objects.filter(code=ward_code).exists():
                expected = WardVisibility.UNKNOWN_WARD
            elif ward_visible_to(user=fresh, ward_code=ward_code) is not None:
                expected = WardVisibility.VISIBLE
            else:
                expected = WardVisibility.HIDDEN
            got = ward_visibility(user_id=user.pk, ward_code=ward_code)
            assert got is expected, (name, ward_code, got, expected)
            decided[name, ward_code] = got
    # The matrix is not trivially uniform: each outcome occurs where it should.
    assert decided["superuser", other.code] is WardVisibility.VISIBLE
    assert decided["permission through a group", other.code] is WardVisibility.VISIBLE
    assert decided["assigned clinician", assigned.code] is WardVisibility.VISIBLE
    assert decided["assigned clinician", other.code] is WardVisibility.HIDDEN
    assert decided["inactive assigned clinician", assigned.code] is WardVisibility.HIDDEN
    assert decided["another permission through a group", other.code] is WardVisibility.HIDDEN
    assert decided["namesake permission through a group", other.code] is WardVisibility.HIDDEN
    assert decided["inactive, permission through a group", other.code] is WardVisibility.HIDDEN
    assert decided["unassigned clinician", "no-such-ward"] is WardVisibility.UNKNOWN_WARD


def test_it_reads_the_users_flags_from_the_database_not_from_a_copy() -> None:
    ward = factories.ward()
    clinician = factories.clinician(ward)
    assert ward_visibility(user_id=clinician.pk, ward_code=ward.code) is WardVisibility.VISIBLE
    User.objects.filter(pk=clinician.pk).update(is_active=False)
    assert ward_visibility(user_id=clinician.pk, ward_code=ward.code) is WardVisibility.HIDDEN


def test_a_user_deleted_since_sees_no_ward_and_an_unknown_ward_stays_unknown() -> None:
    ward = factories.ward()
    clinician = factories.clinician(ward)
    user_id = clinician.pk
    clinician.delete()
    assert ward_visibility(user_id=user_id, ward_code=ward.code) is WardVisibility.HIDDEN
    assert ward_visibility(user_id=user_id, ward_code="gone") is WardVisibility.UNKNOWN_WARD


def test_it_decides_in_one_query(django_assert_num_queries: object) -> None:
    ward = factories.ward()
    clinician = factories.clinician(ward)
    ward_visibility(user_id=clinician.pk, ward_code=ward.code)  # builds the statement
    with django_assert_num_queries(1):  # type: ignore[operator]
        assert ward_visibility(user_id=clinician.pk, ward_code=ward.code) is (
            WardVisibility.VISIBLE
        )
