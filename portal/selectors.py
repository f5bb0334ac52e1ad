"""Reads for the clinician pages, always scoped to the user who asks."""

from __future__ import annotations

import datetime as dt
import uuid

from django.db.models import Count, Prefetch, Q, QuerySet

from alerts.models import Alert, AlertEvent, News2Score, Priority
from patients.models import Admission, Patient, Ward
from patients.selectors import User, user_sees_all_wards, wards_visible_to

OPEN_ALERT_STATES = (Alert.State.ACTIVE, Alert.State.ACKNOWLEDGED)
# The most rows a patient page lists; older history stays in the admin.
ALERT_HISTORY_LIMIT = 200
NEWS2_HISTORY_LIMIT = 2000


def wards_with_open_alert_counts(*, user: User) -> QuerySet[Ward]:
    """The wards ``user`` may see, each annotated with ``open_high``, ``open_medium`` and
    ``open_low``: open alerts by priority, in one aggregated query.

    An alert counts for the ward its patient lies in now (open admission), as the ward
    dashboard shows it on the patient's bed: a transferred patient's alerts move with them.
    """
    open_alert = Q(
        beds__admissions__discharged_at__isnull=True,
        beds__admissions__patient__alerts__state__in=OPEN_ALERT_STATES,
    )
    alert = "beds__admissions__patient__alerts"
    counts = {
        f"open_{priority}": Count(
            alert, filter=open_alert & Q(**{f"{alert}__priority": priority}), distinct=True
        )
        for priority in Priority.values
    }
    return wards_visible_to(user=user).annotate(**counts).order_by("code")


def patient_visible_to(*, user: User, patient_public_id: uuid.UUID) -> Patient | None:
    """The patient, if ``user`` may see the ward the patient lies in now, with
    ``current_admissions`` (0 or 1 open admission, with bed and ward).

    A clinician sees a patient only through the patient's current ward; administrators see
    every patient, discharged ones included.
    """
    patients = Patient.objects.filter(public_id=patient_public_id)
    if not user_sees_all_wards(user=user):
        patients = patients.filter(
            admissions__discharged_at__isnull=True,
            admissions__bed__ward__in=wards_visible_to(user=user),
        )
    open_admissions = Admission.objects.filter(discharged_at__isnull=True).select_related(
        "bed__ward"
    )
    return (
        patients.prefetch_related(
            Prefetch("admissions", queryset=open_admissions, to_attr="current_admissions")
        )
        .distinct()
        .first()
    )


def patient_alert_history(*, patient: Patient) -> QuerySet[AlertEvent]:
    """Every transition of the patient's alerts, newest first, with who made it."""
    return (
        AlertEvent.objects.filter(alert__patient=patient)
        .select_related("alert__rule", "by")
        .order_by("-at", "-pk")[:ALERT_HISTORY_LIMIT]
    )


def patient_open_alerts(*, patient: Patient) -> QuerySet[Alert]:
    return (
        Alert.objects.filter(patient=patient, state__in=OPEN_ALERT_STATES)
        .select_related("rule", "acknowledged_by")
        .order_by("fired_at")
    )


def patient_news2_history(
    *, patient_id: int, start: dt.datetime, end: dt.datetime
) -> list[News2Score]:
    """The patient's newest NEWS2 scores in [start, end) (at most ``NEWS2_HISTORY_LIMIT``;
    the history keeps about one a minute), oldest first."""
    newest_first = (
        News2Score.objects.filter(
            patient_id=patient_id, observed_at__gte=start, observed_at__lt=end
        )
        .order_by("-observed_at")
        .only("observed_at", "total", "complete", "risk")[:NEWS2_HISTORY_LIMIT]
    )
    return list(reversed(newest_first))
