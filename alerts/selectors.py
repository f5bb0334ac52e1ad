"""Reads of rules and alerts."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q, QuerySet

from alerts.models import Alert, AlertRule
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
    patient_ids = {p for p, _ in pairs}
    ward_ids = {w for _, w in pairs if w is not None}
    candidates = list(
        AlertRule.objects.filter(enabled=True).filter(
            Q(patient__isnull=True, ward__isnull=True)
            | Q(ward_id__in=ward_ids)
            | Q(patient_id__in=patient_ids)
        )
    )
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


def alerts_visible_to(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Alert]:
    """Alerts of the patients currently admitted to the wards the user may see."""
    alerts = Alert.objects.select_related("patient", "rule", "bed__ward", "acknowledged_by")
    if user_sees_all_wards(user=user):
        return alerts
    return alerts.filter(bed__ward__in=wards_visible_to(user=user))
