"""The only code that changes alerts: firing, updating, clearing, acknowledging, escalating.

Invariants:
- At most one open alert per (patient, rule): a unique index on a generated column decides
  races; losing one turns a "fire" into an update of the winner's alert.
- Every transition is a compare-and-set UPDATE that names the state it expects, so a worker
  and a clinician racing can neither lose an acknowledgement nor resolve twice; each
  successful transition writes one AlertEvent and publishes it after commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import F, ProtectedError
from django.utils import timezone

from alerts.evaluation import Decision, DecisionKind
from alerts.events import alert_transition_event, publish_on_commit
from alerts.models import Alert, AlertEvent, AlertRule, Priority

Kind = AlertEvent.Kind
State = Alert.State


class AlertActionRefused(Exception):
    """A clinician's action that does not apply to the alert as it now is."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _reload(pk: int) -> Alert:
    return Alert.objects.select_related("rule", "patient", "bed__ward", "acknowledged_by").get(
        pk=pk
    )


def _record(
    alert_pk: int,
    kind: str,
    *,
    at: dt.datetime,
    value: float | None = None,
    by: AbstractBaseUser | None = None,
) -> Alert:
    alert = _reload(alert_pk)
    event = AlertEvent.objects.create(
        alert=alert,
        kind=kind,
        at=at,
        by_id=by.pk if by is not None else None,
        value=value,
        escalation_level=alert.escalation_level,
    )
    publish_on_commit(alert_transition_event(alert=alert, event=event))
    return alert


def _cas(alert_pk: int, expected: dict[str, Any], **changes: Any) -> bool:
    return Alert.objects.filter(pk=alert_pk, **expected).update(**changes) == 1


def alert_fire(
    *,
    rule: AlertRule,
    patient_id: int,
    bed_id: int | None,
    device_id: int | None,
    decision: Decision,
    escalation_period: dt.timedelta,
    now: dt.datetime,
) -> Alert:
    """Open an alert for (patient, rule); if one is open already, update it instead."""
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                patient_id=patient_id,
                rule=rule,
                bed_id=bed_id,
                device_id=device_id,
                priority=rule.priority,
                technical=rule.is_technical,
                latching=rule.latches,
                message=decision.message[:500],
                code=decision.code,
                value=decision.value,
                unit=decision.unit,
                fired_at=decision.at,
                value_at=decision.at,
                escalation_due_at=now + escalation_period
                if rule.priority == Priority.HIGH
                else None,
            )
    except IntegrityError as error:
        if "one_open_alert_per_patient_rule" not in str(error):
            raise
        existing = Alert.objects.filter(open_patient=patient_id, rule=rule).values_list(
            "pk", flat=True
        )
        alert_update(alert_pk=existing.get(), decision=decision)
        return _reload(existing.get())
    return _record(alert.pk, Kind.FIRED, at=decision.at, value=decision.value)


def alert_update(*, alert_pk: int, decision: Decision) -> None:
    """The condition persists: keep the open alert's latest value and message current."""
    Alert.objects.filter(pk=alert_pk).exclude(state=State.RESOLVED).filter(
        value_at__lte=decision.at
    ).update(value=decision.value, value_at=decision.at, message=decision.message[:500])


def alert_condition_cleared(*, alert_pk: int, decision: Decision) -> None:
    """A latched alert's condition cleared: it stays, awaiting acknowledgement."""
    if _cas(
        alert_pk,
        {"state": State.ACTIVE, "condition_cleared_at__isnull": True},
        condition_cleared_at=decision.at,
        value=decision.value,
        value_at=decision.at,
    ):
        _record(alert_pk, Kind.CONDITION_CLEARED, at=decision.at, value=decision.value)
    else:
        # Acknowledged meanwhile: an acknowledged alert whose condition clears resolves.
        alert_resolve(alert_pk=alert_pk, at=decision.at, value=decision.value)


def alert_condition_returned(*, alert_pk: int, decision: Decision) -> None:
    if _cas(
        alert_pk,
        {"condition_cleared_at__isnull": False, "state__in": [State.ACTIVE, State.ACKNOWLEDGED]},
        condition_cleared_at=None,
        value=decision.value,
        value_at=decision.at,
        message=decision.message[:500],
    ):
        _record(alert_pk, Kind.CONDITION_RETURNED, at=decision.at, value=decision.value)


def alert_resolve(*, alert_pk: int, at: dt.datetime, value: float | None = None) -> bool:
    resolved = _cas(
        alert_pk,
        {"state__in": [State.ACTIVE, State.ACKNOWLEDGED]},
        state=State.RESOLVED,
        resolved_at=at,
        escalation_due_at=None,
    )
    if resolved:
        _record(alert_pk, Kind.RESOLVED, at=at, value=value)
    return resolved


def decision_apply(
    *,
    decision: Decision,
    rule: AlertRule,
    alert_pk: int | None,
    patient_id: int,
    bed_id: int | None,
    escalation_period: dt.timedelta,
    now: dt.datetime,
) -> int | None:
    """Apply one evaluation decision; return the pk of the alert it concerns (if still open)."""
    if decision.kind == DecisionKind.FIRE:
        alert = alert_fire(
            rule=rule,
            patient_id=patient_id,
            bed_id=bed_id,
            device_id=None,
            decision=decision,
            escalation_period=escalation_period,
            now=now,
        )
        return alert.pk
    if alert_pk is None:
        return None
    if decision.kind == DecisionKind.UPDATE:
        alert_update(alert_pk=alert_pk, decision=decision)
    elif decision.kind == DecisionKind.CONDITION_CLEARED:
        alert_condition_cleared(alert_pk=alert_pk, decision=decision)
    elif decision.kind == DecisionKind.CONDITION_RETURNED:
        alert_condition_returned(alert_pk=alert_pk, decision=decision)
    elif decision.kind == DecisionKind.RESOLVE:
        alert_resolve(alert_pk=alert_pk, at=decision.at, value=decision.value)
        return None
    return alert_pk


@transaction.atomic
def alert_acknowledge(
    *, alert: Alert, user: AbstractBaseUser, now: dt.datetime | None = None
) -> Alert:
    """A clinician acknowledges an active alert: recorded with who and when.

    An alert whose condition already cleared (latched) resolves on acknowledgement.
    """
    now = now or timezone.now()
    if not _cas(
        alert.pk,
        {"state": State.ACTIVE},
        state=State.ACKNOWLEDGED,
        acknowledged_at=now,
        acknowledged_by=user,
        escalation_due_at=None,
    ):
        current = Alert.objects.filter(pk=alert.pk).values_list("state", flat=True).first()
        raise AlertActionRefused(
            "not_active",
            f"This alert is {current or 'gone'}; only an active alert can be acknowledged.",
        )
    acknowledged = _record(alert.pk, Kind.ACKNOWLEDGED, at=now, value=alert.value, by=user)
    if acknowledged.condition_cleared_at is not None:
        alert_resolve(alert_pk=alert.pk, at=now, value=acknowledged.value)
    return _reload(alert.pk)


@transaction.atomic
def alert_resolve_by_clinician(
    *, alert: Alert, user: AbstractBaseUser, now: dt.datetime | None = None
) -> Alert:
    """A clinician ends an open alert by hand (e.g. a false alarm from a probe that came off).

    Compare-and-set from active or acknowledged, so a clinician racing the engine (or another
    clinician) resolves once; the RESOLVED event records who. Resolving never silences a real
    alarm for long: if the condition still holds, the engine's next reading in breach finds no
    open alert for the rule and fires a new one.
    """
    now = now or timezone.now()
    if not _cas(
        alert.pk,
        {"state__in": [State.ACTIVE, State.ACKNOWLEDGED]},
        state=State.RESOLVED,
        resolved_at=now,
        escalation_due_at=None,
    ):
        raise AlertActionRefused("not_open", "This alert is already resolved.")
    return _record(alert.pk, Kind.RESOLVED, at=now, value=alert.value, by=user)


def alerts_escalate(*, now: dt.datetime | None = None) -> int:
    """Raise every overdue, unacknowledged high-priority alert one level; return how many."""
    now = now or timezone.now()
    overdue = Alert.objects.filter(
        state=State.ACTIVE, priority=Priority.HIGH, escalation_due_at__lte=now
    ).values_list("pk", "escalation_level", "escalation_due_at", "bed__ward__escalation_seconds")
    raised = 0
    for pk, level, due, period in overdue:
        # Not NULL: the filter reads escalation_due_at <= now (the type checker cannot know).
        due = cast(dt.datetime, due)
        with transaction.atomic():
            if _cas(
                pk,
                {"state": State.ACTIVE, "escalation_level": level},
                escalation_level=F("escalation_level") + 1,
                escalation_due_at=due + dt.timedelta(seconds=period or 60),
            ):
                _record(pk, Kind.ESCALATED, at=now)
                raised += 1
    return raised


@transaction.atomic
def alert_rule_save(
    *, rule: AlertRule, values: dict[str, Any], user: AbstractBaseUser, adding: bool, via: str
) -> AlertRule:
    """Create or change a rule. The database's constraints are checked first (raising Django's
    ValidationError with per-field messages); the change goes into the rule's admin history,
    wherever it was made, as well as the change history."""
    for name, value in values.items():
        setattr(rule, name, value)
    rule.validate_constraints()
    rule.save()
    _rule_history(
        rule=rule,
        user=user,
        flag=ADDITION if adding else CHANGE,
        message=f"Added through {via}."
        if adding
        else f"Changed {', '.join(sorted(values))} through {via}.",
    )
    return rule


@transaction.atomic
def alert_rule_delete(*, rule: AlertRule, user: AbstractBaseUser) -> None:
    """Delete a rule that never fired. A rule with alerts is kept for their record: refused."""
    try:
        with transaction.atomic():
            _rule_history(rule=rule, user=user, flag=DELETION, message="Deleted.")
            rule.delete()
    except ProtectedError as error:
        raise AlertActionRefused(
            "rule_in_use", "Alerts refer to this rule; disable it instead."
        ) from error


def _rule_history(*, rule: AlertRule, user: AbstractBaseUser, flag: int, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[rule],
        action_flag=flag,
        change_message=message,
        single_object=True,
    )
