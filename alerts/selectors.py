"""Reads of rules and alerts."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connections, router
from django.db.models import QuerySet

from alerts.models import Alert, AlertRule
from config.rawsql import column_sql, placeholders, table_sql
from patients.models import Patient
from patients.selectors import user_sees_all_wards, wards_visible_to

_SCOPE_ORDER = {"patient": 0, "ward": 1, "hospital": 2}


def rules_effective_for(*, patient: Patient, ward_id: int | None) -> list[AlertRule]:
    """The rules that apply to ``patient`` in ``ward_id``: the one place this is decided.

    Per vital-sign code (and per NEWS2 or technical kind), the most specific scope with any
    enabled rule wins: patient, then ward, then hospital. So a COPD patient's own SpO2 rule
    replaces the ward's and the hospital's SpO2 rules, but not their heart-rate rules.
    """
    return rules_effective_for_many(patients=[(patient.pk, ward_id)])[patient.pk]


def rules_effective_for_many(
    *, patients: Iterable[tuple[int, int | None]]
) -> dict[int, list[AlertRule]]:
    """``rules_effective_for`` for many (patient pk, ward pk) pairs, in one query."""
    pairs = list(patients)
    patient_ids = sorted({p for p, _ in pairs})
    ward_ids = sorted({w for _, w in pairs if w is not None})
    candidates = _rules_candidates(ward_ids=ward_ids, patient_ids=patient_ids)
    result: dict[int, list[AlertRule]] = {}
    for patient_id, ward_id in pairs:
        applicable = [
            rule
            for rule in candidates
            if (rule.patient_id is None and rule.ward_id is None)
            or (rule.ward_id == ward_id and ward_id is not None)
            or rule.patient_id == patient_id
        ]
        best: dict[tuple[str, str], int] = {}
        for rule in applicable:
            key = (rule.kind, rule.code)
            rank = _SCOPE_ORDER[rule.scope]
            best[key] = min(rank, best.get(key, rank))
        result[patient_id] = sorted(
            (r for r in applicable if _SCOPE_ORDER[r.scope] == best[(r.kind, r.code)]),
            key=lambda r: (r.kind, r.code, r.pk),
        )
    return result


@functools.cache
def _rules_candidates_sql(vendor: str, *, wards: bool, patients: bool) -> str:
    r = functools.partial(column_sql, AlertRule, "r")
    scopes = [f"({r('patient')} IS NULL AND {r('ward')} IS NULL)"]
    if wards:
        scopes.append(f"{r('ward')} IN ({{wards}})")
    if patients:
        scopes.append(f"{r('patient')} IN ({{patients}})")
    columns = ", ".join(r(field.attname) for field in AlertRule._meta.concrete_fields)
    return (
        f"SELECT {columns} FROM {table_sql(AlertRule, 'r')} "  # noqa: S608 - names from model metadata
        f"WHERE {r('enabled')} = %s AND ({' OR '.join(scopes)})"
    )


def _rules_candidates(*, ward_ids: list[int], patient_ids: list[int]) -> list[AlertRule]:
    """The enabled rules of the hospital, of ``ward_ids`` and of ``patient_ids``.

    Written as SQL, not as the ORM's filter of three Q objects: this runs in every alert
    evaluation task, and building and compiling that query cost more of the worker's CPU than
    running it (py-spy under 150 paced devices). ``raw`` still returns model instances.
    """
    alias = router.db_for_read(AlertRule)
    vendor = connections[alias].vendor
    sql = _rules_candidates_sql(vendor, wards=bool(ward_ids), patients=bool(patient_ids)).format(
        wards=placeholders(len(ward_ids)) if ward_ids else "",
        patients=placeholders(len(patient_ids)) if patient_ids else "",
    )
    return list(AlertRule.objects.using(alias).raw(sql, [True, *ward_ids, *patient_ids]))


def alerts_visible_to(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Alert]:
    """Alerts of the patients currently admitted to the wards the user may see."""
    alerts = Alert.objects.select_related("patient", "rule", "bed__ward", "acknowledged_by")
    if user_sees_all_wards(user=user):
        return alerts
    return alerts.filter(bed__ward__in=wards_visible_to(user=user))
