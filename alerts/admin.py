"""The administrators' admin for alert rules, alerts (read-only, with their audit trail) and
NEWS2 history, and the alert-related parts of the patient page.

The patient page is extended here, not in patients/admin.py, because apps depend one way
(patients ← monitoring ← alerts): Patient is re-registered with a subclass of its admin.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.timesince import timesince

from alerts.forms import AlertRuleForm, ObservationEntryForm, PatientThresholdRuleForm
from alerts.models import Alert, AlertEvent, AlertRule, News2Score, PatientAlertState
from alerts.selectors import rules_effective_for
from alerts.services import AlertActionRefused, alert_acknowledge
from config.rawsql import concrete_field
from monitoring.services import ObservationRefused, observation_enter
from monitoring.vitals import vital_for
from patients.admin import CONFIRMED, PatientAdmin, ReadOnlyModelAdmin
from patients.models import Admission, Patient

# Beyond this many, refusals of one "acknowledge" are summed up rather than listed.
REFUSALS_LISTED = 10

# Alert rules ----------------------------------------------------------------------------------


class RuleScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("hospital", "Hospital"), ("ward", "Ward"), ("patient", "Patient")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[AlertRule]) -> QuerySet[AlertRule]:
        if self.value() == "hospital":
            return queryset.filter(ward__isnull=True, patient__isnull=True)
        if self.value() == "ward":
            return queryset.filter(ward__isnull=False)
        if self.value() == "patient":
            return queryset.filter(patient__isnull=False)
        return queryset


def _scope_label(rule: AlertRule) -> str:
    """Reads ``rule.ward`` / ``rule.patient``: select them with the rule."""
    if rule.patient is not None:
        return f"Patient {rule.patient.mrn}"
    if rule.ward is not None:
        return f"Ward {rule.ward.code}"
    return "Hospital"


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    """Every change is kept in the admin history (LogEntry), as ModelAdmin does by default."""

    form = AlertRuleForm
    list_display = [
        "name",
        "kind",
        "code",
        "scope",
        "priority",
        "low",
        "high",
        "clear_low",
        "clear_high",
        "sustain_seconds",
        "enabled",
    ]
    list_filter = [
        "kind",
        "priority",
        "enabled",
        RuleScopeFilter,
        ("ward", admin.RelatedFieldListFilter),
    ]
    search_fields = ["name"]
    list_select_related = ["ward", "patient"]
    # A hospital has thousands of patients; a select would load every one.
    autocomplete_fields = ["ward", "patient"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "priority", "enabled"]}),
        (
            "Vital-sign threshold",
            {
                "fields": ["code", ("low", "high"), ("clear_low", "clear_high")],
                "description": "Only for threshold rules; NEWS2 and device-offline rules take "
                "no vital sign and no limits.",
            },
        ),
        ("Timing", {"fields": ["sustain_seconds"]}),
        (
            "Scope",
            {
                "fields": ["ward", "patient"],
                "description": "Neither: the whole hospital. A ward: that ward's patients. A "
                "patient (threshold rules only): that patient. For each vital sign the most "
                "specific scope with an enabled rule replaces the others.",
            },
        ),
        ("Record", {"fields": ["public_id", "created_at", "updated_at"]}),
    ]
    readonly_fields = ["public_id", "created_at", "updated_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertRule]:
        # The change page's str(patient) and the scope column read both.
        return super().get_queryset(request).select_related("ward", "patient")

    @admin.display(description="Scope")
    def scope(self, rule: AlertRule) -> str:
        return _scope_label(rule)


# Alerts ---------------------------------------------------------------------------------------


class AlertEventInline(admin.TabularInline):
    """The alert's audit trail, oldest first: who did what, when, at which value and level."""

    model = AlertEvent
    readonly_fields = fields = ("at", "kind", "by", "value", "escalation_level")
    ordering = ["at", "pk"]
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertEvent]:
        return super().get_queryset(request).select_related("by")

    def has_add_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Alert | None = None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyModelAdmin):
    """Read-only: alerts change only through alerts.services (the acknowledge action here)."""

    list_display = [
        "patient",
        "rule",
        "priority",
        "state",
        "awaiting_acknowledgement",
        "value_with_unit",
        "fired_at",
        "acknowledged_by",
        "acknowledged_at",
        "escalation_level",
    ]
    list_filter = [
        "state",
        "priority",
        "technical",
        ("bed__ward", admin.RelatedFieldListFilter),
    ]
    search_fields = ["^patient__mrn"]
    list_select_related = ["patient", "rule", "acknowledged_by"]
    # Alerts only accumulate; a second COUNT(*) over all of them buys nothing.
    show_full_result_count = False
    readonly_fields = fields = (
        "public_id",
        "patient",
        "rule",
        "bed",
        "device",
        "priority",
        "technical",
        "latching",
        "state",
        "message",
        "code",
        "value",
        "unit",
        "fired_at",
        "value_at",
        "condition_cleared_at",
        "acknowledged_at",
        "acknowledged_by",
        "resolved_at",
        "escalation_level",
        "escalation_due_at",
        "created_at",
    )
    raw_id_fields = ["patient", "rule", "bed", "device", "acknowledged_by"]
    inlines = [AlertEventInline]
    actions = ["acknowledge"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alert]:
        # The read-only change page renders every related object; str(bed) reads the ward.
        return (
            super()
            .get_queryset(request)
            .select_related("patient", "rule", "bed__ward", "device", "acknowledged_by")
        )

    @admin.display(description="Cleared, awaiting acknowledgement", boolean=True)
    def awaiting_acknowledgement(self, alert: Alert) -> bool:
        return alert.state == Alert.State.ACTIVE and alert.condition_cleared_at is not None

    @admin.display(description="Value", ordering="value")
    def value_with_unit(self, alert: Alert) -> str:
        if alert.value is None:
            return "—"
        return f"{alert.value:g} {alert.unit}".strip()

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        # The admin itself stays read-only (has_change_permission is False); acknowledging is
        # a clinical action through the service, allowed to whoever may change alerts.
        return request.user.has_perm("alerts.change_alert")

    @admin.action(description="Acknowledge selected alerts", permissions=["acknowledge"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        acknowledged, refused = 0, 0
        for alert in queryset.select_related("patient").order_by("pk"):
            try:
                alert_acknowledge(alert=alert, user=request.user)  # type: ignore[arg-type]
            except AlertActionRefused as refusal:
                refused += 1
                if refused <= REFUSALS_LISTED:
                    self.message_user(
                        request,
                        f"Alert for patient {alert.patient.mrn} fired "
                        f"{date_format(timezone.localtime(alert.fired_at), 'DATETIME_FORMAT')}: "
                        f"{refusal.detail}",
                        messages.WARNING,
                    )
                continue
            acknowledged += 1
        if refused > REFUSALS_LISTED:
            self.message_user(
                request,
                f"{refused - REFUSALS_LISTED} more alerts were not acknowledged: only an active "
                "alert can be acknowledged.",
                messages.WARNING,
            )
        if acknowledged:
            self.message_user(
                request,
                f"Acknowledged {acknowledged} alert{'s' if acknowledged != 1 else ''}.",
                messages.SUCCESS,
            )


@admin.register(AlertEvent)
class AlertEventAdmin(ReadOnlyModelAdmin):
    """Read-only browsing of the audit trail across alerts (e.g. everything one user did)."""

    list_display = ["at", "kind", "alert", "by", "value", "escalation_level"]
    list_filter = ["kind"]
    search_fields = ["=by__username", "^alert__patient__mrn"]
    list_select_related = ["alert", "by"]
    show_full_result_count = False
    ordering = ["-pk"]
    readonly_fields = fields = ("alert", "kind", "at", "by", "value", "escalation_level")
    raw_id_fields = ["alert", "by"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertEvent]:
        return super().get_queryset(request).select_related("alert", "by")


# NEWS2 history --------------------------------------------------------------------------------


@admin.register(News2Score)
class News2ScoreAdmin(ReadOnlyModelAdmin):
    list_display = ["patient", "observed_at", "total", "complete", "scale", "risk"]
    list_filter = ["complete", "risk"]
    search_fields = ["^patient__mrn"]
    list_select_related = ["patient"]
    show_full_result_count = False
    readonly_fields = fields = (
        "patient",
        "observed_at",
        "total",
        "complete",
        "scale",
        "risk",
        "parameters",
    )
    raw_id_fields = ["patient"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[News2Score]:
        return super().get_queryset(request).select_related("patient")


# The patient page -----------------------------------------------------------------------------


class PatientThresholdRuleInline(admin.TabularInline):
    """The patient's own threshold rules, e.g. a COPD patient's SpO2 target of 88–92 %.

    For each vital sign they replace the ward's and the hospital's rules for that vital sign.
    """

    model = AlertRule
    fk_name = "patient"
    form = PatientThresholdRuleForm
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
    extra = 0
    verbose_name = "own threshold rule"
    verbose_name_plural = (
        "Own threshold rules (for their vital sign, these replace the ward's and the hospital's)"
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertRule]:
        return super().get_queryset(request).filter(kind=AlertRule.Kind.THRESHOLD)


def _limits(rule: AlertRule, *, low: float | None, high: float | None, signs: str) -> str:
    if low is None and high is None:
        return "—"
    vital = vital_for(rule.code)
    unit = f" {vital.unit}" if vital else ""
    parts = []
    if low is not None:
        parts.append(f"{signs[0]} {low:g}{unit}")
    if high is not None:
        parts.append(f"{signs[1]} {high:g}{unit}")
    return ", ".join(parts)


def _code_label(rule: AlertRule) -> str:
    if not rule.code:
        return "—"
    vital = vital_for(rule.code)
    return f"{vital.short_name} ({rule.code})" if vital else rule.code


class PatientAlertsAdmin(PatientAdmin):
    """PatientAdmin, plus on the change page the patient's alerting: the rules in force, the
    current NEWS2, their own threshold rules, and an action to enter air/oxygen and ACVPU.

    Nothing is added to the list: its query count must not grow with the number of rows.
    """

    actions = [*PatientAdmin.actions, "record_observations"]

    def get_fieldsets(self, request: HttpRequest, obj: Patient | None = None) -> list[Any]:
        alerting = ["news2_spo2_scale2"]
        if obj is not None:
            alerting += ["current_news2", "effective_alert_rules"]
        patient_fields = [f for f in self.get_fields(request, obj) if f not in alerting]
        return [
            (None, {"fields": patient_fields}),
            ("Alerting", {"fields": alerting}),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Patient | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None:
            readonly += ["current_news2", "effective_alert_rules"]
        return readonly

    def get_inlines(self, request: HttpRequest, obj: Patient | None) -> list[Any]:
        inlines = list(super().get_inlines(request, obj))
        if obj is not None:
            inlines.append(PatientThresholdRuleInline)
        return inlines

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        super().save_formset(request, form, formset, change)
        if formset.model is not AlertRule:
            return
        # The patient's history says what changed on their page; each rule's own history
        # must also show every change to that rule, wherever it was made.
        added = {id(rule) for rule in formset.new_objects}
        changed = {id(rule): fields for rule, fields in formset.changed_objects}
        where = f"on the page of patient {form.instance.mrn}"
        for rule in [*formset.new_objects, *(rule for rule, _ in formset.changed_objects)]:
            if id(rule) in added:
                self.log_addition(request, rule, f"Added {where}.")
            else:
                labels = ", ".join(
                    str(concrete_field(AlertRule, name).verbose_name) for name in changed[id(rule)]
                )
                self.log_change(request, rule, f"Changed {labels} {where}.")

    @admin.display(description="Current NEWS2")
    def current_news2(self, patient: Patient) -> str:
        state = (
            PatientAlertState.objects.filter(patient=patient)
            .values("news2_total", "news2_complete", "news2_risk", "news2_at")
            .first()
        )
        if state is None or state["news2_total"] is None:
            return "Not scored yet."
        at = state["news2_at"]
        when = ""
        if at is not None:
            # Every value shows its age (clinical.md): a score may be hours old.
            when = f", at {date_format(timezone.localtime(at), 'DATETIME_FORMAT')}"
            when += f" ({timesince(at)} ago)"
        if state["news2_complete"]:
            return f"{state['news2_total']}, complete; {state['news2_risk']} risk{when}"
        # An incomplete score is a lower bound: say so, never let it pass for the real total.
        return (
            f"at least {state['news2_total']}, incomplete (parameters missing or stale); "
            f"{state['news2_risk'] or 'unknown'} risk{when}"
        )

    @admin.display(description="Effective alert rules")
    def effective_alert_rules(self, patient: Patient) -> SafeString:
        stay = (
            Admission.objects.filter(patient=patient, discharged_at__isnull=True)
            .values("bed__ward_id", "bed__ward__code")
            .first()
        )
        ward_id = stay["bed__ward_id"] if stay else None
        ward_code = stay["bed__ward__code"] if stay else None
        rules = rules_effective_for(patient=patient, ward_id=ward_id)
        where = (
            format_html("In ward {} now.", ward_code)
            if stay
            else "Not admitted: the hospital rules and their own rules apply."
        )
        if not rules:
            return format_html("{} No enabled rule applies.", where)

        def scope(rule: AlertRule) -> str:
            return {"patient": "This patient", "ward": f"Ward {ward_code}"}.get(
                rule.scope, "Hospital"
            )

        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:alerts_alertrule_change", args=[rule.pk]),
                    rule.name,
                    rule.get_kind_display(),
                    _code_label(rule),
                    _limits(rule, low=rule.low, high=rule.high, signs="<>"),
                    _limits(rule, low=rule.clear_low, high=rule.clear_high, signs="≥≤"),
                    rule.get_priority_display(),
                    f"{rule.sustain_seconds} s",
                    scope(rule),
                )
                for rule in rules
            ),
        )
        return format_html(
            "<p>{} For each vital sign (and each NEWS2 or technical kind) the most specific "
            "scope wins: patient, then ward, then hospital.</p>"
            '<table class="effective-alert-rules"><thead><tr>'
            '<th scope="col">Rule</th><th scope="col">Kind</th><th scope="col">Vital sign</th>'
            '<th scope="col">Fires when</th><th scope="col">Clears at</th>'
            '<th scope="col">Priority</th><th scope="col">Sustain</th><th scope="col">Scope</th>'
            "</tr></thead><tbody>{}</tbody></table>",
            where,
            rows,
        )

    def has_record_observations_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("monitoring.add_observation")

    @admin.action(
        description="Record air/oxygen and consciousness…",
        permissions=["record_observations"],
    )
    def record_observations(
        self, request: HttpRequest, queryset: QuerySet[Patient]
    ) -> TemplateResponse | None:
        patient = self._the_one_selected(request, queryset, verb="Recording observations")
        if patient is None:
            return None
        form = ObservationEntryForm(request.POST if CONFIRMED in request.POST else None)
        if not form.is_valid():
            context = {
                **self._action_context(
                    request, title=f"Record air/oxygen and consciousness of {patient.mrn}"
                ),
                "patient": patient,
                "form": form,
                "action": "record_observations",
            }
            return TemplateResponse(
                request, "admin/alerts/patient/record_observations.html", context
            )
        entered = form.entered()
        try:
            # Both or neither: a half-recorded entry would leave the nurse unsure what to redo.
            with transaction.atomic():
                for value in entered:
                    observation_enter(
                        patient=patient, code=value.code, value=value.value, user=request.user
                    )
        except ObservationRefused as refused:
            self.message_user(
                request,
                f"Nothing was recorded for patient {patient.mrn}: {refused.detail}",
                messages.ERROR,
            )
            return None
        summary = "; ".join(f"{value.label}: {value.shown}" for value in entered)
        self.log_change(request, patient, f"Recorded {summary}.")
        self.message_user(
            request, f"Recorded for patient {patient.mrn}: {summary}.", messages.SUCCESS
        )
        return None


admin.site.unregister(Patient)
admin.site.register(Patient, PatientAlertsAdmin)
