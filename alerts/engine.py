"""Running evaluations: claiming device messages, locking patients, applying decisions.

A message is evaluated exactly once: it is claimed with ``SELECT ... FOR UPDATE`` among the
not-yet-evaluated, and marked evaluated in the same transaction as the alert
transitions its readings caused. A second run over the same messages (a retried task, the
catch-up racing the normal path) finds nothing to claim and changes nothing. Evaluations of
one patient serialise on that patient's ``PatientAlertState`` row, locked in patient order so
two workers never deadlock.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import OperationalError, transaction
from django.utils import timezone

from alerts.engine_sql import (
    alerts_open,
    messages_claim,
    messages_mark_evaluated,
    readings_since,
    samples_of_messages,
    states_existing,
    states_lock,
    stays_current,
)
from alerts.evaluation import (
    CarriedState,
    Decision,
    DecisionKind,
    OpenAlert,
    RuleSpec,
    Sample,
    patient_evaluate,
)
from alerts.events import News2Event, publish_on_commit
from alerts.models import Alert, AlertRule, News2Score, PatientAlertState
from alerts.news2 import NURSE_ENTERED_FRESHNESS, News2Result, ParameterValue
from alerts.selectors import rules_effective_for_many
from alerts.services import alert_fire, alert_resolve, decision_apply
from config.rawsql import rows_insert, rows_update
from monitoring.models import IngestMessage
from monitoring.vitals import CONSCIOUSNESS, SUPPLEMENTAL_OXYGEN
from patients.models import Admission, Patient

logger = logging.getLogger(__name__)

STAFF_ENTERED_CODES = (SUPPLEMENTAL_OXYGEN.code, CONSCIOUSNESS.code)
# The history keeps every change of score, and the unchanged score at least this often.
NEWS2_HISTORY_INTERVAL = dt.timedelta(minutes=1)
DEFAULT_ESCALATION_SECONDS = 60


def rule_spec(rule: AlertRule) -> RuleSpec:
    return RuleSpec(
        pk=rule.pk,
        kind=rule.kind,
        name=rule.name,
        code=rule.code,
        low=rule.low,
        high=rule.high,
        clear_low=rule.clear_low,
        clear_high=rule.clear_high,
        sustain=dt.timedelta(seconds=rule.sustain_seconds),
        latches=rule.latches,
    )


_DEADLOCK = 1213  # ER_LOCK_DEADLOCK: InnoDB rolled the victim back whole
ATTEMPTS = 3


def messages_evaluate(*, message_pks: Sequence[int], now: dt.datetime | None = None) -> int:
    """Evaluate the readings of the given device messages not evaluated yet; return how many
    messages this call evaluated. Idempotent."""
    now = now or timezone.now()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _messages_evaluate(message_pks=message_pks, now=now)
        except OperationalError as error:
            # A deadlock victim's transaction was rolled back whole: nothing was claimed or
            # changed, so running it again is safe.
            if not error.args or error.args[0] != _DEADLOCK or attempt == ATTEMPTS:
                raise
            logger.warning("alert evaluation was a deadlock victim; retrying")
    raise AssertionError("unreachable")


def _messages_evaluate(*, message_pks: Sequence[int], now: dt.datetime) -> int:
    with transaction.atomic():
        # A plain locking read, not SKIP LOCKED: skipping would also skip rows another
        # transaction merely scanned past, leaving them for the catch-up, seconds later. A
        # message another evaluation holds is waited for, then seen as evaluated. Rows are
        # locked in primary-key order, the same in every evaluation, so none deadlock here.
        claimed = messages_claim(message_pks=message_pks)
        if not claimed:
            return 0
        samples = samples_of_messages(message_pks=claimed)
        if samples:
            patients_evaluate(samples=samples, now=now)
        messages_mark_evaluated(message_pks=claimed, now=now)
    return len(claimed)


def messages_pending(*, older_than: dt.datetime, limit: int) -> list[int]:
    """Device messages never evaluated (broker down, worker lost), oldest first."""
    return list(
        IngestMessage.objects.filter(evaluated_at__isnull=True, received_at__lte=older_than)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


def _lock_states(patient_ids: Sequence[int]) -> dict[int, PatientAlertState]:
    ids = sorted(patient_ids)
    # Create only the missing rows: an INSERT IGNORE over existing ones takes shared locks
    # that deadlock against another evaluation's FOR UPDATE of the same patients.
    existing = states_existing(patient_ids=ids)
    missing = [pk for pk in ids if pk not in existing]
    if missing:
        PatientAlertState.objects.bulk_create(
            [PatientAlertState(patient_id=pk) for pk in missing], ignore_conflicts=True
        )
    return states_lock(patient_ids=ids)


_NEWS2_FIELDS = ("patient_id", "observed_at", "total", "complete", "scale", "risk", "parameters")
_STATE_FIELDS = (
    "latest",
    "runs",
    "evaluated_at",
    "news2_total",
    "news2_complete",
    "news2_risk",
    "news2_at",
    "news2_recorded_at",
)


def _states_save(states: Sequence[PatientAlertState]) -> None:
    """Write the evaluated patients' states back in one statement (config.rawsql). Not
    ``bulk_update``: building its CASE WHEN expressions in the ORM was 58 % of an evaluation
    task's CPU (py-spy during ``bin/bench alerts``); rawsql writes the same SQL as text."""
    rows_update(
        PatientAlertState,
        _STATE_FIELDS,
        [(state.pk, [getattr(state, name) for name in _STATE_FIELDS]) for state in states],
    )


def _staff_entered(
    patient_ids: Sequence[int], now: dt.datetime
) -> dict[int, dict[str, ParameterValue]]:
    latest: dict[int, dict[str, ParameterValue]] = defaultdict(dict)
    for patient_id, code, value, observed_at in readings_since(
        patient_ids=patient_ids, codes=STAFF_ENTERED_CODES, since=now - NURSE_ENTERED_FRESHNESS
    ):
        latest[patient_id][code] = ParameterValue(code=code, value=value, observed_at=observed_at)
    return latest


def patients_evaluate(*, samples: dict[int, list[Sample]], now: dt.datetime) -> None:
    """Evaluate new readings of several patients (within the caller's transaction)."""
    patient_ids = sorted(samples)
    states = _lock_states(patient_ids)
    beds = stays_current(patient_ids=patient_ids)
    scale2 = {pk: row["patient__news2_spo2_scale2"] for pk, row in beds.items()}
    # Patients discharged since their readings: read on their own (seldom).
    if unadmitted := [pk for pk in patient_ids if pk not in beds]:
        scale2.update(
            Patient.objects.filter(pk__in=unadmitted).values_list("pk", "news2_spo2_scale2")
        )
    rules = rules_effective_for_many(
        patients=[(pk, beds.get(pk, {}).get("bed__ward_id")) for pk in patient_ids]
    )
    open_alerts: dict[int, dict[int, OpenAlert]] = defaultdict(dict)
    for pk, patient_id, rule_id, alert_state, cleared_at in alerts_open(patient_ids=patient_ids):
        open_alerts[patient_id][rule_id] = OpenAlert(
            rule_id, alert_state, cleared_at is not None, pk
        )
    staff = _staff_entered(patient_ids, now)

    news2_rows: list[News2Score] = []
    for patient_id in patient_ids:
        state = states[patient_id]
        carried = CarriedState.from_json(state.latest, state.runs)
        patient_rules = {rule.pk: rule for rule in rules[patient_id]}
        alerts_now = open_alerts[patient_id]
        evaluation = patient_evaluate(
            samples=samples[patient_id],
            rules=[rule_spec(rule) for rule in patient_rules.values()],
            open_alerts=alerts_now,
            state=carried,
            staff_entered=staff.get(patient_id, {}),
            spo2_scale2=scale2.get(patient_id, False),
        )
        bed = beds.get(patient_id, {})
        period = dt.timedelta(
            seconds=bed.get("bed__ward__escalation_seconds") or DEFAULT_ESCALATION_SECONDS
        )
        for decision in evaluation.decisions:
            open_alert = alerts_now.get(decision.rule_pk)
            alert_pk = decision_apply(
                decision=decision,
                rule=patient_rules[decision.rule_pk],
                alert_pk=decision.alert_pk or (open_alert.pk if open_alert else None),
                patient_id=patient_id,
                bed_id=bed.get("bed_id"),
                escalation_period=period,
                now=now,
            )
            if open_alert is not None and alert_pk is not None:
                open_alert.pk = alert_pk
        state.latest, state.runs = carried.to_json()
        state.evaluated_at = now
        if evaluation.news2 is not None and evaluation.news2_at is not None:
            shown = (state.news2_total, state.news2_complete, state.news2_risk)
            row = _news2_history_row(state, patient_id, evaluation.news2, evaluation.news2_at)
            if bed and shown != (state.news2_total, state.news2_complete, state.news2_risk):
                publish_on_commit(
                    News2Event(
                        type="news2",
                        ward=bed["bed__ward__code"],
                        bed=str(bed["bed__public_id"]),
                        patient=str(bed["patient__public_id"]),
                        total=evaluation.news2.total,
                        complete=evaluation.news2.complete,
                        risk=evaluation.news2.risk,
                        at=evaluation.news2_at.isoformat(),
                    )
                )
            if row is not None:
                news2_rows.append(row)
    _states_save(list(states.values()))
    # rawsql, like the states above: no compiling of bulk_create's INSERT in every task.
    rows_insert(
        News2Score,
        _NEWS2_FIELDS,
        ([getattr(row, name) for name in _NEWS2_FIELDS] for row in news2_rows),
    )


def _news2_history_row(
    state: PatientAlertState, patient_id: int, result: News2Result, at: dt.datetime
) -> News2Score | None:
    changed = (
        state.news2_total != result.total
        or state.news2_complete != result.complete
        or state.news2_recorded_at is None
        or at - state.news2_recorded_at >= NEWS2_HISTORY_INTERVAL
    )
    state.news2_total = result.total
    state.news2_complete = result.complete
    state.news2_risk = result.risk
    state.news2_at = at
    if not changed or (state.news2_recorded_at is not None and at < state.news2_recorded_at):
        return None
    state.news2_recorded_at = at
    return News2Score(
        patient_id=patient_id,
        observed_at=at,
        total=result.total,
        complete=result.complete,
        scale=result.scale,
        risk=result.risk,
        parameters=[
            {
                "parameter": p.parameter,
                "code": p.code,
                "value": p.value,
                "score": p.score,
                "stale": p.stale,
            }
            for p in result.parameters
        ],
    )


def devices_offline_check(*, now: dt.datetime | None = None) -> tuple[int, int]:
    """Fire "no data" alarms for admitted patients whose assigned device went silent, and
    resolve them when data flows again. Returns (fired, resolved). Idempotent."""
    now = now or timezone.now()
    stays = list(
        Admission.objects.filter(discharged_at__isnull=True, bed__devices__active=True).values(
            "patient_id",
            "bed_id",
            "bed__ward_id",
            "bed__ward__escalation_seconds",
            "admitted_at",
            "bed__devices__pk",
            "bed__devices__serial",
            "bed__devices__last_seen_at",
        )
    )
    by_patient: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for stay in stays:
        by_patient[stay["patient_id"]].append(stay)
    rules = rules_effective_for_many(
        patients=[(pk, rows[0]["bed__ward_id"]) for pk, rows in by_patient.items()]
    )
    open_offline = {
        (patient_id, rule_id): pk
        for pk, patient_id, rule_id in Alert.objects.filter(
            open_patient__in=list(by_patient), rule__kind=AlertRule.Kind.DEVICE_OFFLINE
        ).values_list("pk", "patient_id", "rule_id")
    }
    fired = resolved = 0
    for patient_id, rows in by_patient.items():
        for rule in rules[patient_id]:
            if rule.kind != AlertRule.Kind.DEVICE_OFFLINE:
                continue
            silent = [
                row
                for row in rows
                if now - max(filter(None, (row["bed__devices__last_seen_at"], row["admitted_at"])))
                > dt.timedelta(seconds=rule.sustain_seconds)
            ]
            open_pk = open_offline.get((patient_id, rule.pk))
            with transaction.atomic():
                if silent and open_pk is None:
                    fired += _offline_fire(rule, patient_id, silent[0], now)
                elif not silent and open_pk is not None:
                    resolved += alert_resolve(alert_pk=open_pk, at=now)
    return fired, resolved


def _offline_fire(
    rule: AlertRule, patient_id: int, row: Mapping[str, Any], now: dt.datetime
) -> int:
    last_seen = row["bed__devices__last_seen_at"]
    since = f"since {last_seen:%H:%M:%S} UTC" if last_seen else "since admission"
    alert_fire(
        rule=rule,
        patient_id=patient_id,
        bed_id=row["bed_id"],
        device_id=row["bed__devices__pk"],
        decision=Decision(
            DecisionKind.FIRE,
            rule.pk,
            now,
            None,
            "",
            "",
            f"No data from device {row['bed__devices__serial']} {since}",
        ),
        escalation_period=dt.timedelta(
            seconds=row["bed__ward__escalation_seconds"] or DEFAULT_ESCALATION_SECONDS
        ),
        now=now,
    )
    return 1
