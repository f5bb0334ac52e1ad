"""Alert rules, alerts, their audit trail, and each patient's NEWS2 history."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Q, When

from monitoring.models import Device
from monitoring.vitals import CODE_CHOICES
from patients.models import Bed, Patient, Ward


class Priority(models.TextChoices):
    """IEC 60601-1-8 alarm priorities (clinical.md): high red, medium yellow, low cyan."""

    HIGH = "high", "High"
    MEDIUM = "medium", "Medium"
    LOW = "low", "Low"


class AlertRule(models.Model):
    """One alerting rule, at hospital (no ward, no patient), ward or patient scope.

    For a vital-sign code, the most specific scope that has any enabled rule for that code
    wins: a patient's own SpO2 rules replace the ward's, which replace the hospital's.
    NEWS2 and device-offline rules are hospital-wide or per ward.
    """

    class Kind(models.TextChoices):
        THRESHOLD = "threshold", "Vital-sign threshold"
        NEWS2_SINGLE_THREE = "news2_single_3", "NEWS2: a 3 in any single parameter"
        NEWS2_MEDIUM = "news2_5_6", "NEWS2: aggregate 5–6"
        NEWS2_HIGH = "news2_7", "NEWS2: aggregate 7 or more"
        DEVICE_OFFLINE = "device_offline", "Technical: no data from an assigned device"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.THRESHOLD)
    code = models.CharField(max_length=32, choices=CODE_CHOICES, blank=True)
    low = models.FloatField(
        null=True, blank=True, help_text="Fires when a reading is below this value."
    )
    high = models.FloatField(
        null=True, blank=True, help_text="Fires when a reading is above this value."
    )
    clear_low = models.FloatField(
        null=True,
        blank=True,
        help_text="Hysteresis: a low alarm clears only at or above this value (default: low).",
    )
    clear_high = models.FloatField(
        null=True,
        blank=True,
        help_text="Hysteresis: a high alarm clears only at or below this value (default: high).",
    )
    priority = models.CharField(max_length=8, choices=Priority.choices)
    sustain_seconds = models.PositiveIntegerField(
        default=0,
        help_text="The condition must hold continuously this long before the alert fires "
        "(for device-offline rules: how long without data).",
    )
    enabled = models.BooleanField(default=True)
    ward = models.ForeignKey(
        Ward, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules"
    )
    patient = models.ForeignKey(
        Patient, on_delete=models.CASCADE, null=True, blank=True, related_name="alert_rules"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "code", "priority"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ward__isnull=True) | Q(patient__isnull=True),
                name="alert_rule_one_scope",
            ),
            models.CheckConstraint(
                condition=~Q(kind="threshold")
                | (~Q(code="") & (Q(low__isnull=False) | Q(high__isnull=False))),
                name="alert_rule_threshold_has_code_and_limit",
            ),
            models.CheckConstraint(
                condition=Q(clear_low__isnull=True)
                | Q(low__isnull=True)
                | Q(clear_low__gte=F("low")),
                name="alert_rule_clear_low_not_below_low",
            ),
            models.CheckConstraint(
                condition=Q(clear_high__isnull=True)
                | Q(high__isnull=True)
                | Q(clear_high__lte=F("high")),
                name="alert_rule_clear_high_not_above_high",
            ),
            models.CheckConstraint(
                condition=Q(kind="threshold") | Q(patient__isnull=True),
                name="alert_rule_only_thresholds_per_patient",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def scope(self) -> str:
        if self.patient_id:
            return "patient"
        if self.ward_id:
            return "ward"
        return "hospital"

    @property
    def is_technical(self) -> bool:
        return self.kind == self.Kind.DEVICE_OFFLINE

    @property
    def latches(self) -> bool:
        """High-priority physiological alarms latch until acknowledged (clinical.md)."""
        return self.priority == Priority.HIGH and not self.is_technical


class Alert(models.Model):
    """One episode of a rule's condition for one patient.

    At most one open (not resolved) alert per patient and rule, enforced like admissions: a
    stored generated column holds the patient id while the alert is open and NULL once
    resolved, under a unique index with the rule.
    """

    class State(models.TextChoices):
        ACTIVE = "active", "Active"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        RESOLVED = "resolved", "Resolved"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="alerts")
    rule = models.ForeignKey(AlertRule, on_delete=models.PROTECT, related_name="alerts")
    bed = models.ForeignKey(Bed, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    device = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    priority = models.CharField(max_length=8, choices=Priority.choices)
    technical = models.BooleanField(default=False)
    latching = models.BooleanField(default=False)
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACTIVE)
    message = models.CharField(max_length=500)
    code = models.CharField(max_length=32, blank=True)
    value = models.FloatField(null=True, blank=True)
    unit = models.CharField(max_length=16, blank=True)
    fired_at = models.DateTimeField(help_text="When the condition met the rule (reading time).")
    value_at = models.DateTimeField(null=True, blank=True)
    condition_cleared_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="A latched alert whose condition cleared: awaiting acknowledgement.",
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    escalation_level = models.PositiveSmallIntegerField(default=0)
    escalation_due_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    open_patient = models.GeneratedField(
        expression=Case(When(~Q(state="resolved"), then=F("patient_id")), default=None),
        output_field=models.BigIntegerField(null=True),
        db_persist=True,
    )

    class Meta:
        ordering = ["-fired_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["open_patient", "rule"], name="one_open_alert_per_patient_rule"
            ),
        ]
        indexes = [
            models.Index(fields=["state", "priority"], name="alert_state_priority_idx"),
            models.Index(fields=["patient", "fired_at"], name="alert_patient_time_idx"),
            models.Index(fields=["escalation_due_at"], name="alert_escalation_due_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_priority_display()} alert {self.public_id}"

    @property
    def is_open(self) -> bool:
        return self.state != self.State.RESOLVED


class AlertEvent(models.Model):
    """Every transition of an alert: the audit trail (who, what, when, value)."""

    class Kind(models.TextChoices):
        FIRED = "fired", "Fired"
        CONDITION_CLEARED = "condition_cleared", "Condition cleared (latched)"
        CONDITION_RETURNED = "condition_returned", "Condition returned"
        ACKNOWLEDGED = "acknowledged", "Acknowledged"
        ESCALATED = "escalated", "Escalated"
        RESOLVED = "resolved", "Resolved"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    at = models.DateTimeField()
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    value = models.FloatField(null=True, blank=True)
    escalation_level = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["alert", "at"], name="alert_event_alert_time_idx")]

    def __str__(self) -> str:
        return f"{self.kind} at {self.at:%H:%M:%S}"


class PatientAlertState(models.Model):
    """Each patient's evaluation state, locked by an evaluation so evaluations of one patient
    serialise, and carried from one evaluation to the next so none re-reads history.

    ``latest``: the newest value of each vital seen, ``{code: [value, iso time]}`` (NEWS2 uses
    it). ``runs``: per rule, since when its condition has held, ``{rule pk: {"since": iso,
    "last": iso}}`` (sustain times use it).

    A dedicated row rather than the Patient row: ingestion's inserts take a shared lock on the
    Patient row (foreign key check), and must never wait for an evaluation.
    """

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="alert_state")
    latest = models.JSONField(default=dict)
    runs = models.JSONField(default=dict)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    # The current NEWS2 (dashboards read it without scanning the history).
    news2_total = models.PositiveSmallIntegerField(null=True, blank=True)
    news2_complete = models.BooleanField(default=False)
    news2_risk = models.CharField(max_length=16, blank=True)
    news2_at = models.DateTimeField(null=True, blank=True)
    news2_recorded_at = models.DateTimeField(
        null=True, blank=True, help_text="Time of the last score written to the history."
    )

    def __str__(self) -> str:
        return f"alert state of patient {self.patient_id}"


class News2Score(models.Model):
    """One computed NEWS2 score (history for charts and audit)."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="news2_scores")
    observed_at = models.DateTimeField(help_text="Time of the newest reading scored.")
    total = models.PositiveSmallIntegerField()
    complete = models.BooleanField()
    scale = models.PositiveSmallIntegerField(default=1)
    risk = models.CharField(max_length=16)
    parameters = models.JSONField()

    class Meta:
        ordering = ["-observed_at"]
        indexes = [models.Index(fields=["patient", "observed_at"], name="news2_patient_time_idx")]

    def __str__(self) -> str:
        return f"NEWS2 {self.total}{'' if self.complete else '?'}"
