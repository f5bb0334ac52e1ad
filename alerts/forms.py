"""Forms of the alerts admin: alert rules (whole, and a patient's own thresholds) and the
"record air/oxygen and consciousness" action's intermediate page."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from alerts.models import AlertRule
from monitoring.vitals import CONSCIOUSNESS, SUPPLEMENTAL_OXYGEN, vital_for

Kind = AlertRule.Kind

# Every field a rule's validity depends on; a form that leaves one out (the patient inline has
# no kind and no ward) is judged by the instance's value of it.
_RULE_FIELDS = ("kind", "code", "low", "high", "clear_low", "clear_high", "ward", "patient")
_LIMIT_FIELDS = ("low", "high", "clear_low", "clear_high")


def alert_rule_problems(
    values: dict[str, Any], *, unreadable: frozenset[str] = frozenset()
) -> dict[str, list[str]]:
    """What is wrong with a rule made of ``values``, worded for an administrator, by field.

    Covers every check constraint of AlertRule, so the database never has to refuse a rule a
    form accepted, plus what the database cannot know: that the code is a vital sign the
    catalogue knows, that low is below high, and that limits lie inside the vital's plausible
    band (a limit outside it could never be reached by an accepted reading). Checks that
    involve an ``unreadable`` field (one the user mistyped) are skipped: "needs a limit" is not
    the answer to a typo in the limit.
    """
    problems: dict[str, list[str]] = {}

    def refuse(field: str, message: str) -> None:
        problems.setdefault(field, []).append(message)

    def readable(*fields: str) -> bool:
        return not unreadable.intersection(fields)

    kind, code = values.get("kind"), values.get("code") or ""
    low, high = values.get("low"), values.get("high")
    clear_low, clear_high = values.get("clear_low"), values.get("clear_high")

    if (
        readable("ward", "patient")
        and values.get("ward") is not None
        and values.get("patient") is not None
    ):
        refuse(
            "patient",
            "A rule applies to one ward or to one patient, not both: leave the ward empty for "
            "a patient's own rule, or the patient empty for a ward rule.",
        )
    if not readable("kind"):
        return problems

    if kind != Kind.THRESHOLD:
        if readable("patient") and values.get("patient") is not None:
            refuse(
                "patient",
                "Only vital-sign threshold rules can be set per patient; NEWS2 and "
                "device-offline rules apply to a whole ward or the hospital.",
            )
        if readable("code") and code:
            refuse("code", "NEWS2 and device-offline rules take no vital sign: leave it empty.")
        for field in _LIMIT_FIELDS:
            if readable(field) and values.get(field) is not None:
                refuse(field, "NEWS2 and device-offline rules take no limits: leave it empty.")
        return problems

    if readable("code") and not code:
        refuse("code", "A threshold rule needs the vital sign it watches.")
    if readable("low", "high"):
        if low is None and high is None:
            refuse("low", "A threshold rule needs a low limit, a high limit, or both.")
        elif low is not None and high is not None and low >= high:
            refuse("high", f"The high limit must be above the low limit ({low:g}).")
    if readable("low", "clear_low") and clear_low is not None:
        if low is None:
            refuse("clear_low", "A clear-low limit needs a low limit to clear from.")
        elif clear_low < low:
            refuse(
                "clear_low",
                f"A low alarm must clear at or above its low limit ({low:g}), not below it.",
            )
    if readable("high", "clear_high") and clear_high is not None:
        if high is None:
            refuse("clear_high", "A clear-high limit needs a high limit to clear from.")
        elif clear_high > high:
            refuse(
                "clear_high",
                f"A high alarm must clear at or below its high limit ({high:g}), not above it.",
            )
    if not (readable("code") and code):
        return problems
    vital = vital_for(code)
    if vital is None:
        refuse("code", f"{code!r} is not a vital sign of the catalogue.")
        return problems
    for field in _LIMIT_FIELDS:
        value = values.get(field)
        if (
            readable(field)
            and value is not None
            and not vital.plausible_min <= value <= vital.plausible_max
        ):
            refuse(
                field,
                f"{vital.name} readings lie between {vital.plausible_min:g} and "
                f"{vital.plausible_max:g} {vital.unit}; a limit of {value:g} is never reached.",
            )
    return problems


class AlertRuleForm(forms.ModelForm):
    """An alert rule, checked with readable messages before the database's constraints.

    Each message is attached to a field the failing constraint names: the model validation
    that follows clean() skips a check constraint over a field with an error, so the user
    reads our wording, never "Constraint … is violated". A form clean() passed still gets the
    constraints checked, as a safety net.
    """

    class Meta:
        model = AlertRule
        fields = [
            "name",
            "kind",
            "code",
            "low",
            "high",
            "clear_low",
            "clear_high",
            "priority",
            "sustain_seconds",
            "enabled",
            "ward",
            "patient",
        ]

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        # A form without a field (the patient inline has no kind and no ward) is judged by
        # the instance's value of it.
        values = {
            name: cleaned.get(name) if name in self.fields else getattr(self.instance, name)
            for name in _RULE_FIELDS
        }
        unreadable = frozenset(
            name for name in _RULE_FIELDS if name in self.fields and self.has_error(name)
        )
        for field, messages in alert_rule_problems(values, unreadable=unreadable).items():
            for message in messages:
                self.add_error(field if field in self.fields else None, message)
        return cleaned


class PatientThresholdRuleForm(AlertRuleForm):
    """A patient's own threshold rule (the patient page's inline): kind and scope are fixed."""

    class Meta(AlertRuleForm.Meta):
        fields = [
            "name",
            "code",
            "low",
            "high",
            "clear_low",
            "clear_high",
            "priority",
            "sustain_seconds",
            "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.kind = Kind.THRESHOLD
        self.instance.ward = None


@dataclass(frozen=True, slots=True)
class EnteredValue:
    label: str  # "Air or oxygen"
    code: str  # the catalogue code it is recorded under
    value: int
    shown: str  # "Oxygen (supplemental)"


# The catalogue's staff-entered values (monitoring/vitals.py), labelled as in clinical.md.
AIR_OR_OXYGEN_CHOICES = [(0, "Air"), (1, "Oxygen (supplemental)")]
ACVPU_CHOICES = [
    (0, "Alert"),
    (1, "new Confusion"),
    (2, "Voice"),
    (3, "Pain"),
    (4, "Unresponsive"),
]


class ObservationEntryForm(forms.Form):
    """Air or oxygen and ACVPU consciousness, each optional, at least one."""

    air_or_oxygen = forms.TypedChoiceField(
        label="Air or oxygen",
        choices=AIR_OR_OXYGEN_CHOICES,
        coerce=int,
        empty_value=None,
        required=False,
        widget=forms.RadioSelect,
    )
    consciousness = forms.TypedChoiceField(
        label="Consciousness (ACVPU)",
        choices=ACVPU_CHOICES,
        coerce=int,
        empty_value=None,
        required=False,
        widget=forms.RadioSelect,
    )

    # Which catalogue code each field records.
    CODES = {
        "air_or_oxygen": SUPPLEMENTAL_OXYGEN.code,
        "consciousness": CONSCIOUSNESS.code,
    }

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if not self.errors and all(cleaned.get(name) is None for name in self.CODES):
            raise ValidationError(
                "Choose air or oxygen, a level of consciousness, or both.", code="nothing_chosen"
            )
        return cleaned

    def entered(self) -> list[EnteredValue]:
        """Each value entered, in form order."""
        entered = []
        for name, code in self.CODES.items():
            value = self.cleaned_data.get(name)
            if value is None:
                continue
            field = self.fields[name]
            choices = dict(field.choices)  # type: ignore[attr-defined]
            entered.append(
                EnteredValue(
                    label=str(field.label), code=code, value=value, shown=str(choices[value])
                )
            )
        return entered
