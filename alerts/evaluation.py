"""Deciding alert transitions from readings: pure logic, no database.

The task (``alerts/tasks.py``) loads a patient's new readings, effective rules, open alerts
and carried state, calls ``patient_evaluate``, and hands the decisions to the services.

Rules of evaluation, for every new reading in time order:
- **Threshold rule**: a reading is *in breach* below ``low`` or above ``high`` (strictly), and
  *clear* at or above ``clear_low`` and at or below ``clear_high`` (hysteresis; they default to
  the limits). Between the two nothing changes. The breach must hold for ``sustain_seconds``
  across consecutive readings before the alert fires; a gap of more than ``MAX_GAP`` without a
  reading of that vital restarts the count (the device-offline alarm covers silence).
- **NEWS2 rules**: at each new reading time the score is computed from the newest value of
  each parameter (``alerts.news2``); the rule's trigger must hold for its sustain time.
- Readings the device flagged as artifact are stored but never evaluated.
- An open alert whose condition persists is updated (value, time), never duplicated. When the
  condition clears, a latching (high-priority physiological) alert that nobody acknowledged
  stays active, marked "cleared, awaiting acknowledgement"; any other alert resolves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from alerts.news2 import News2Result, ParameterValue, news2_score
from monitoring.vitals import VITALS

MAX_GAP = dt.timedelta(seconds=15)


class RuleKind(StrEnum):
    THRESHOLD = "threshold"
    NEWS2_SINGLE_THREE = "news2_single_3"
    NEWS2_MEDIUM = "news2_5_6"
    NEWS2_HIGH = "news2_7"
    DEVICE_OFFLINE = "device_offline"


NEWS2_KINDS = frozenset({RuleKind.NEWS2_SINGLE_THREE, RuleKind.NEWS2_MEDIUM, RuleKind.NEWS2_HIGH})


@dataclass(frozen=True, slots=True)
class RuleSpec:
    pk: int
    kind: str
    name: str
    code: str
    low: float | None
    high: float | None
    clear_low: float | None
    clear_high: float | None
    sustain: dt.timedelta
    latches: bool

    def breach(self, value: float) -> bool:
        return (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        )

    def clear(self, value: float) -> bool:
        low = self.clear_low if self.clear_low is not None else self.low
        high = self.clear_high if self.clear_high is not None else self.high
        return (low is None or value >= low) and (high is None or value <= high)


@dataclass(frozen=True, slots=True)
class Sample:
    code: str
    value: float
    observed_at: dt.datetime
    artifact: bool = False


@dataclass(slots=True)
class OpenAlert:
    """What the evaluation needs of an open alert (pk None: fired in this evaluation)."""

    rule_pk: int
    state: str  # "active" | "acknowledged"
    condition_cleared: bool
    pk: int | None = None


class DecisionKind(StrEnum):
    FIRE = "fire"
    UPDATE = "update"
    CONDITION_CLEARED = "condition_cleared"
    CONDITION_RETURNED = "condition_returned"
    RESOLVE = "resolve"


@dataclass(frozen=True, slots=True)
class Decision:
    kind: DecisionKind
    rule_pk: int
    at: dt.datetime
    value: float | None
    code: str
    unit: str
    message: str
    alert_pk: int | None = None  # None for FIRE, and for later decisions on a just-fired alert


@dataclass(slots=True)
class CarriedState:
    """``PatientAlertState`` as plain data: newest values and per-rule condition runs."""

    latest: dict[str, tuple[float, dt.datetime]] = field(default_factory=dict)
    runs: dict[int, tuple[dt.datetime, dt.datetime]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, latest: dict[str, list], runs: dict[str, dict[str, str]]) -> CarriedState:
        return cls(
            latest={c: (float(v), dt.datetime.fromisoformat(t)) for c, (v, t) in latest.items()},
            runs={
                int(pk): (
                    dt.datetime.fromisoformat(r["since"]),
                    dt.datetime.fromisoformat(r["last"]),
                )
                for pk, r in runs.items()
            },
        )

    def to_json(self) -> tuple[dict[str, list], dict[str, dict[str, str]]]:
        return (
            {c: [v, t.isoformat()] for c, (v, t) in self.latest.items()},
            {
                str(pk): {"since": since.isoformat(), "last": last.isoformat()}
                for pk, (since, last) in self.runs.items()
            },
        )


@dataclass(slots=True)
class Evaluation:
    decisions: list[Decision] = field(default_factory=list)
    news2: News2Result | None = None  # at the newest evaluated time
    news2_at: dt.datetime | None = None


def _held_long_enough(
    state: CarriedState, rule: RuleSpec, at: dt.datetime, condition: bool
) -> bool:
    """Track the rule's condition run; True when it has held for the rule's sustain time."""
    if not condition:
        state.runs.pop(rule.pk, None)
        return False
    since, last = state.runs.get(rule.pk, (at, at))
    if at < last:
        # An older reading arriving late cannot extend or restart the run.
        return at - since >= rule.sustain
    if at - last > MAX_GAP:
        since = at
    state.runs[rule.pk] = (since, at)
    return at - since >= rule.sustain


def _unit(code: str) -> str:
    vital = VITALS.get(code)
    return vital.unit if vital else ""


def _threshold_message(rule: RuleSpec, value: float) -> str:
    vital = VITALS[rule.code]
    if rule.low is not None and value < rule.low:
        return f"{vital.short_name} {value:g} {vital.unit} below {rule.low:g} {vital.unit}"
    if rule.high is not None and value > rule.high:
        return f"{vital.short_name} {value:g} {vital.unit} above {rule.high:g} {vital.unit}"
    return f"{vital.short_name} {value:g} {vital.unit}"


def _news2_condition(kind: str, result: News2Result) -> bool:
    if kind == RuleKind.NEWS2_HIGH:
        return result.total >= 7
    if kind == RuleKind.NEWS2_MEDIUM:
        return 5 <= result.total <= 6
    return result.any_single_three


def _news2_message(result: News2Result) -> str:
    suffix = "" if result.complete else f" (incomplete: {', '.join(result.missing)} missing)"
    return f"NEWS2 {result.total}{suffix}: {result.response}"


class _Stepper:
    def __init__(self, open_alerts: dict[int, OpenAlert]) -> None:
        self.open_alerts = open_alerts
        self.decisions: list[Decision] = []

    def step(
        self,
        rule: RuleSpec,
        *,
        at: dt.datetime,
        value: float,
        code: str,
        unit: str,
        breach: bool,
        clear: bool,
        sustained: bool,
        message: str,
    ) -> None:
        alert = self.open_alerts.get(rule.pk)

        def decide(kind: DecisionKind) -> None:
            self.decisions.append(
                Decision(kind, rule.pk, at, value, code, unit, message, alert.pk if alert else None)
            )

        if alert is None:
            if breach and sustained:
                decide(DecisionKind.FIRE)
                self.open_alerts[rule.pk] = OpenAlert(rule.pk, "active", False)
            return
        if breach:
            if alert.condition_cleared:
                alert.condition_cleared = False
                decide(DecisionKind.CONDITION_RETURNED)
            else:
                decide(DecisionKind.UPDATE)
        elif clear:
            if rule.latches and alert.state == "active":
                if not alert.condition_cleared:
                    alert.condition_cleared = True
                    decide(DecisionKind.CONDITION_CLEARED)
            else:
                decide(DecisionKind.RESOLVE)
                del self.open_alerts[rule.pk]


def patient_evaluate(
    *,
    samples: Sequence[Sample],
    rules: Iterable[RuleSpec],
    open_alerts: dict[int, OpenAlert],
    state: CarriedState,
    staff_entered: dict[str, ParameterValue],
    spo2_scale2: bool,
) -> Evaluation:
    """Decide the transitions that ``samples`` (new readings of one patient) cause.

    ``state`` and ``open_alerts`` are updated in place to what they are after the samples.
    """
    rules = list(rules)
    thresholds = [r for r in rules if r.kind == RuleKind.THRESHOLD]
    news2_rules = [r for r in rules if r.kind in NEWS2_KINDS]
    stepper = _Stepper(open_alerts)
    evaluation = Evaluation()
    by_time: dict[dt.datetime, list[Sample]] = {}
    for sample in samples:
        if not sample.artifact:
            by_time.setdefault(sample.observed_at, []).append(sample)

    for at in sorted(by_time):
        for sample in by_time[at]:
            newest = state.latest.get(sample.code)
            if newest is None or sample.observed_at >= newest[1]:
                state.latest[sample.code] = (sample.value, sample.observed_at)
            for rule in thresholds:
                if rule.code != sample.code:
                    continue
                breach = rule.breach(sample.value)
                stepper.step(
                    rule,
                    at=at,
                    value=sample.value,
                    code=sample.code,
                    unit=_unit(sample.code),
                    breach=breach,
                    clear=rule.clear(sample.value),
                    sustained=_held_long_enough(state, rule, at, breach),
                    message=_threshold_message(rule, sample.value),
                )
        if not news2_rules:
            continue
        latest = {
            code: ParameterValue(code=code, value=value, observed_at=observed_at)
            for code, (value, observed_at) in state.latest.items()
        }
        latest.update(staff_entered)
        result = news2_score(latest=latest, now=at, spo2_scale2=spo2_scale2)
        evaluation.news2, evaluation.news2_at = result, at
        for rule in news2_rules:
            condition = _news2_condition(rule.kind, result)
            stepper.step(
                rule,
                at=at,
                value=float(result.total),
                code="",
                unit="{score}",
                breach=condition,
                clear=not condition,
                sustained=_held_long_enough(state, rule, at, condition),
                message=_news2_message(result),
            )
    evaluation.decisions = stepper.decisions
    return evaluation
