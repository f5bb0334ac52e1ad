"""Alert transitions as typed events on the ward's channel-layer group, sent after commit.

An event carries everything a dashboard needs to render the alert without another query.
Delivery is best effort: the alert rows are the truth, and a dashboard that missed an event
gets a fresh snapshot on reconnect.
"""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

from django.db import transaction

from alerts.models import Alert, AlertEvent
from monitoring.events import ward_event_send_sync


class AlertFields(TypedDict):
    """An alert as dashboards render it: the protocol's <alert object>."""

    alert: str
    patient: str
    bed: str | None
    bed_label: str | None
    rule: str
    rule_kind: str
    technical: bool
    priority: str
    state: str
    condition_cleared: bool
    message: str
    code: str
    value: float | None
    unit: str
    fired_at: str
    value_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    escalation_level: int


class AlertTransitionEvent(AlertFields):
    type: str  # "alert" (docs/dashboard-protocol.md)
    ward: str
    event: str  # AlertEvent.Kind
    at: str


def iso_or_none(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def alert_fields(alert: Alert) -> AlertFields:
    """``alert`` as dashboards render it, in events and in ward snapshots alike.

    ``alert`` must have ``rule``, ``patient``, ``bed`` and ``acknowledged_by`` loaded.
    """
    by = alert.acknowledged_by
    return AlertFields(
        alert=str(alert.public_id),
        patient=str(alert.patient.public_id),
        bed=str(alert.bed.public_id) if alert.bed else None,
        bed_label=alert.bed.label if alert.bed else None,
        rule=alert.rule.name,
        rule_kind=alert.rule.kind,
        technical=alert.technical,
        priority=alert.priority,
        state=alert.state,
        condition_cleared=alert.condition_cleared_at is not None,
        message=alert.message,
        code=alert.code,
        value=alert.value,
        unit=alert.unit,
        fired_at=alert.fired_at.isoformat(),
        value_at=iso_or_none(alert.value_at),
        acknowledged_at=iso_or_none(alert.acknowledged_at),
        acknowledged_by=(by.get_full_name() or by.get_username()) if by else None,
        escalation_level=alert.escalation_level,
    )


def alert_transition_event(*, alert: Alert, event: AlertEvent) -> AlertTransitionEvent | None:
    """The event for ``alert`` after ``event`` (None when the alert has no ward to go to).

    ``alert`` must have ``rule``, ``patient``, ``bed__ward`` and ``acknowledged_by`` loaded.
    """
    if alert.bed is None:
        return None
    return AlertTransitionEvent(
        type="alert",
        ward=alert.bed.ward.code,
        event=event.kind,
        at=event.at.isoformat(),
        **alert_fields(alert),
    )


def publish_on_commit(payload: AlertTransitionEvent | News2Event | None) -> None:
    """Send ``payload`` to its ward's dashboards once the surrounding transaction commits."""
    if payload is None:
        return
    transaction.on_commit(lambda: ward_event_send_sync(payload["ward"], dict(payload)))


class News2Event(TypedDict):
    type: str  # "news2"
    ward: str
    bed: str
    patient: str
    total: int
    complete: bool
    risk: str
    at: str
