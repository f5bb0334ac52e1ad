"""Records API: alerts (and acting on them), alert rules, each patient's NEWS2 history.

Alerts are read through ``alerts.selectors.alerts_visible_to`` and acted on through the same
services the dashboards use; a refused action answers 409. Every clinician reads every rule
(they decide what alarms); only administrators change them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError as ModelValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from alerts.forms import alert_rule_problems
from alerts.models import Alert, AlertRule, News2Score, Priority
from alerts.news2 import Risk
from alerts.selectors import alerts_visible_to
from alerts.services import (
    AlertActionRefused,
    alert_acknowledge,
    alert_resolve_by_clinician,
    alert_rule_delete,
    alert_rule_save,
)
from config.api_errors import Conflict
from config.openapi import VITAL_CODES, Example, errors, public_id_parameter
from patients.api_access import ReadForAllWriteForAdministrators, TokenScopes
from patients.models import ApiToken
from patients.rest_base import (
    PagePagination,
    PublicIdField,
    RecordsApi,
    WardCodeField,
    public_id_or_404,
    range_fields,
    range_validate,
    visible_or_404,
)
from patients.selectors import patients_visible_to, wards_visible_to

# Alerts


class AlertSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    patient = serializers.UUIDField(source="patient.public_id")
    ward = serializers.SlugField(source="bed.ward.code", allow_null=True, default=None)
    bed = serializers.UUIDField(source="bed.public_id", allow_null=True, default=None)
    bed_label = serializers.CharField(source="bed.label", allow_null=True, default=None)
    rule = serializers.UUIDField(source="rule.public_id")
    rule_name = serializers.CharField(source="rule.name")
    rule_kind = serializers.ChoiceField(source="rule.kind", choices=AlertRule.Kind.choices)
    priority = serializers.ChoiceField(choices=Priority.choices)
    technical = serializers.BooleanField()
    latching = serializers.BooleanField()
    state = serializers.ChoiceField(choices=Alert.State.choices)
    message = serializers.CharField()
    code = serializers.CharField(help_text="The vital's code (empty for NEWS2 and technical).")
    value = serializers.FloatField(allow_null=True)
    unit = serializers.CharField()
    fired_at = serializers.DateTimeField()
    value_at = serializers.DateTimeField(allow_null=True)
    condition_cleared_at = serializers.DateTimeField(
        allow_null=True, help_text="A latched alert whose condition cleared: to acknowledge."
    )
    acknowledged_at = serializers.DateTimeField(allow_null=True)
    acknowledged_by = serializers.CharField(
        source="acknowledged_by.get_username", allow_null=True, default=None
    )
    resolved_at = serializers.DateTimeField(allow_null=True)
    escalation_level = serializers.IntegerField()


class AlertFilterSerializer(serializers.Serializer):
    ward = serializers.SlugField(required=False, max_length=32, help_text="Ward code.")
    patient = serializers.UUIDField(required=False, help_text="Patient public id.")
    state = serializers.ChoiceField(choices=Alert.State.choices, required=False)
    priority = serializers.ChoiceField(choices=Priority.choices, required=False)


_ALERT = {
    "id": Example.ALERT,
    "patient": Example.PATIENT,
    "ward": "amu",
    "bed": Example.BED,
    "bed_label": "3",
    "rule": Example.RULE,
    "rule_name": "SpO2 low",
    "rule_kind": "threshold",
    "priority": "high",
    "technical": False,
    "latching": True,
    "state": "active",
    "message": "SpO2 87 % below 90 %",
    "code": "59408-5",
    "value": 87.0,
    "unit": "%",
    "fired_at": "2026-11-21T10:00:00Z",
    "value_at": "2026-11-21T10:00:04Z",
    "condition_cleared_at": None,
    "acknowledged_at": None,
    "acknowledged_by": None,
    "resolved_at": None,
    "escalation_level": 0,
}
_ALERT_EXAMPLE = OpenApiExample("active alert", value=_ALERT)


class AlertListApi(RecordsApi):
    pagination_class = PagePagination
    audit_action = "api.alerts.list"

    @extend_schema(
        tags=["alerts"],
        summary="Alerts of the caller's wards, newest first",
        parameters=[AlertFilterSerializer],
        responses={200: AlertSerializer(many=True), **errors(400, 404)},
        examples=[_ALERT_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = self.filters(AlertFilterSerializer)
        alerts = alerts_visible_to(user=request.user)
        if "ward" in filters:
            alerts = alerts.filter(bed__ward__code=filters["ward"])
        if "patient" in filters:
            alerts = alerts.filter(patient__public_id=filters["patient"])
        if "state" in filters:
            alerts = alerts.filter(state=filters["state"])
        if "priority" in filters:
            alerts = alerts.filter(priority=filters["priority"])
        return self.paginated(
            alerts.order_by("-fired_at", "-pk"),
            AlertSerializer,
            patient_of=lambda alert: alert.patient_id,
        )


class AlertDetailApi(RecordsApi):
    audit_action = "api.alerts.retrieve"

    @extend_schema(
        tags=["alerts"],
        summary="One alert",
        parameters=[public_id_parameter(Example.ALERT)],
        responses={200: AlertSerializer, **errors(404)},
        examples=[_ALERT_EXAMPLE],
    )
    def get(self, request: Request, id: str) -> Response:
        alert = visible_or_404(alerts_visible_to(user=request.user), public_id=public_id_or_404(id))
        self.audit(patient_ids=[alert.patient_id])
        return Response(AlertSerializer(alert).data)


class _AlertActionApi(RecordsApi):
    """A clinician's action on an alert of their ward: the dashboard's own service."""

    required_scope = ApiToken.Scope.ACKNOWLEDGE

    def act(self, alert: Alert, user: Any) -> Alert:
        raise NotImplementedError

    def post(self, request: Request, id: str) -> Response:
        alert = visible_or_404(alerts_visible_to(user=request.user), public_id=public_id_or_404(id))
        try:
            changed = self.act(alert, request.user)
        except AlertActionRefused as error:
            raise Conflict(error.code, error.detail) from error
        return Response(AlertSerializer(changed).data)


class AlertAcknowledgeApi(_AlertActionApi):
    @extend_schema(
        tags=["alerts"],
        summary="Acknowledge an active alert",
        description="Records who and when and stops escalation. A latched alert whose "
        "condition already cleared resolves.",
        parameters=[public_id_parameter(Example.ALERT)],
        request=None,
        responses={
            200: AlertSerializer,
            **errors(
                404,
                409,
                conflict={
                    "code": "not_active",
                    "detail": "This alert is acknowledged; only an active alert can be "
                    "acknowledged.",
                },
            ),
        },
        examples=[
            OpenApiExample(
                "acknowledged",
                value={
                    **_ALERT,
                    "state": "acknowledged",
                    "acknowledged_at": "2026-11-21T10:00:30Z",
                    "acknowledged_by": "nurse.amu",
                },
            )
        ],
    )
    def post(self, request: Request, id: str) -> Response:
        return super().post(request, id)

    def act(self, alert: Alert, user: Any) -> Alert:
        return alert_acknowledge(alert=alert, user=user)


class AlertResolveApi(_AlertActionApi):
    @extend_schema(
        tags=["alerts"],
        summary="Resolve an open alert by hand",
        description="For a false alarm, e.g. a probe that came off. If the condition still "
        "holds, the next reading in breach fires a new alert.",
        parameters=[public_id_parameter(Example.ALERT)],
        request=None,
        responses={
            200: AlertSerializer,
            **errors(
                404,
                409,
                conflict={"code": "not_open", "detail": "This alert is already resolved."},
            ),
        },
        examples=[
            OpenApiExample(
                "resolved",
                value={**_ALERT, "state": "resolved", "resolved_at": "2026-11-21T10:02:00Z"},
            )
        ],
    )
    def post(self, request: Request, id: str) -> Response:
        return super().post(request, id)

    def act(self, alert: Alert, user: Any) -> Alert:
        return alert_resolve_by_clinician(alert=alert, user=user)


# Alert rules


class AlertRuleSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=AlertRule.Kind.choices)
    code = serializers.CharField(help_text="The vital's code (threshold rules only).")
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)
    clear_low = serializers.FloatField(allow_null=True)
    clear_high = serializers.FloatField(allow_null=True)
    priority = serializers.ChoiceField(choices=Priority.choices)
    sustain_seconds = serializers.IntegerField()
    enabled = serializers.BooleanField()
    scope = serializers.ChoiceField(choices=["hospital", "ward", "patient"])
    ward = serializers.SlugField(source="ward.code", allow_null=True, default=None)
    patient = serializers.UUIDField(source="patient.public_id", allow_null=True, default=None)
    updated_at = serializers.DateTimeField()


# Every field a rule's validity depends on (alert_rule_problems judges them together).
_RULE_VALIDITY_FIELDS = (
    "kind",
    "code",
    "low",
    "high",
    "clear_low",
    "clear_high",
    "ward",
    "patient",
)


class AlertRuleInputSerializer(serializers.Serializer):
    """A rule as an administrator writes it: checked like the admin's form, so the database
    never has to refuse one (``alerts.forms.alert_rule_problems``)."""

    name = serializers.CharField(max_length=120)
    kind = serializers.ChoiceField(choices=AlertRule.Kind.choices, default=AlertRule.Kind.THRESHOLD)
    code = serializers.ChoiceField(choices=VITAL_CODES, allow_blank=True, default="")
    low = serializers.FloatField(allow_null=True, default=None)
    high = serializers.FloatField(allow_null=True, default=None)
    clear_low = serializers.FloatField(allow_null=True, default=None)
    clear_high = serializers.FloatField(allow_null=True, default=None)
    priority = serializers.ChoiceField(choices=Priority.choices)
    sustain_seconds = serializers.IntegerField(min_value=0, max_value=86400, default=0)
    enabled = serializers.BooleanField(default=True)
    ward = WardCodeField(
        visible=wards_visible_to, allow_null=True, default=None, help_text="Ward code."
    )
    patient = PublicIdField(
        visible=patients_visible_to, allow_null=True, default=None, help_text="Patient id."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        rule: AlertRule | None = self.instance
        values = {
            name: attrs[name] if name in attrs else getattr(rule, name, None)
            for name in _RULE_VALIDITY_FIELDS
        }
        problems = alert_rule_problems(values)
        if problems:
            raise serializers.ValidationError(problems)
        return attrs


_RULE = {
    "id": Example.RULE,
    "name": "SpO2 low",
    "kind": "threshold",
    "code": "59408-5",
    "low": 90.0,
    "high": None,
    "clear_low": 92.0,
    "clear_high": None,
    "priority": "high",
    "sustain_seconds": 10,
    "enabled": True,
    "scope": "ward",
    "ward": "amu",
    "patient": None,
    "updated_at": "2026-11-20T16:00:00Z",
}
_RULE_EXAMPLE = OpenApiExample("ward SpO2 rule", value=_RULE, response_only=True)
_RULE_INPUT_EXAMPLE = OpenApiExample(
    "ward SpO2 rule",
    value={
        "name": "SpO2 low",
        "kind": "threshold",
        "code": "59408-5",
        "low": 90,
        "clear_low": 92,
        "priority": "high",
        "sustain_seconds": 10,
        "ward": "amu",
    },
    request_only=True,
)
_RULE_ROWS = ("ward", "patient")
_RULE_IN_USE = "Alerts refer to this rule, which is kept for their record: disable it instead."


def _rules() -> QuerySet[AlertRule]:
    return AlertRule.objects.select_related(*_RULE_ROWS)


def _rule_save(*, rule: AlertRule, values: dict[str, Any], user: Any, adding: bool) -> AlertRule:
    try:
        alert_rule_save(rule=rule, values=values, user=user, adding=adding, via="the records API")
    except ModelValidationError as error:
        raise serializers.ValidationError(error.message_dict) from error
    return _rules().get(pk=rule.pk)


class AlertRuleListCreateApi(RecordsApi):
    pagination_class = PagePagination
    permission_classes = [ReadForAllWriteForAdministrators, TokenScopes]

    @extend_schema(
        tags=["alert rules"],
        summary="Every alert rule (hospital, ward and patient scope)",
        responses={200: AlertRuleSerializer(many=True), **errors(404)},
        examples=[_RULE_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        return self.paginated(
            _rules().order_by("kind", "code", "priority", "pk"), AlertRuleSerializer
        )

    @extend_schema(
        tags=["alert rules"],
        summary="Add a rule (administrators)",
        request=AlertRuleInputSerializer,
        responses={201: AlertRuleSerializer, **errors(400)},
        examples=[_RULE_INPUT_EXAMPLE, _RULE_EXAMPLE],
    )
    def post(self, request: Request) -> Response:
        given = AlertRuleInputSerializer(data=request.data, context=self.context())
        given.is_valid(raise_exception=True)
        rule = _rule_save(
            rule=AlertRule(), values=dict(given.validated_data), user=request.user, adding=True
        )
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class AlertRuleDetailApi(RecordsApi):
    permission_classes = [ReadForAllWriteForAdministrators, TokenScopes]

    @extend_schema(
        tags=["alert rules"],
        summary="One rule",
        parameters=[public_id_parameter(Example.RULE)],
        responses={200: AlertRuleSerializer, **errors(404)},
        examples=[_RULE_EXAMPLE],
    )
    def get(self, request: Request, id: str) -> Response:
        rule = visible_or_404(_rules(), public_id=public_id_or_404(id))
        return Response(AlertRuleSerializer(rule).data)

    @extend_schema(
        tags=["alert rules"],
        summary="Change a rule (administrators)",
        parameters=[public_id_parameter(Example.RULE)],
        request=AlertRuleInputSerializer(partial=True),
        responses={200: AlertRuleSerializer, **errors(400, 404)},
        examples=[
            OpenApiExample("disable", value={"enabled": False}, request_only=True),
            _RULE_EXAMPLE,
        ],
    )
    def patch(self, request: Request, id: str) -> Response:
        rule = visible_or_404(_rules(), public_id=public_id_or_404(id))
        given = AlertRuleInputSerializer(
            rule, data=request.data, partial=True, context=self.context()
        )
        given.is_valid(raise_exception=True)
        rule = _rule_save(
            rule=rule, values=dict(given.validated_data), user=request.user, adding=False
        )
        return Response(AlertRuleSerializer(rule).data)

    @extend_schema(
        tags=["alert rules"],
        summary="Delete a rule that never fired (administrators)",
        description="A rule that has alerts is kept for their record: disable it instead.",
        parameters=[public_id_parameter(Example.RULE)],
        responses={
            204: None,
            **errors(
                404,
                409,
                conflict={
                    "code": "rule_in_use",
                    "detail": _RULE_IN_USE,
                },
            ),
        },
    )
    def delete(self, request: Request, id: str) -> Response:
        rule = visible_or_404(_rules(), public_id=public_id_or_404(id))
        user = request.user
        if isinstance(user, AnonymousUser):  # never: the view's permissions require a sign-in
            raise exceptions.NotAuthenticated()
        try:
            alert_rule_delete(rule=rule, user=user)
        except AlertActionRefused as refused:
            raise Conflict(refused.code, refused.detail) from refused
        return Response(status=status.HTTP_204_NO_CONTENT)


# NEWS2 history


class News2ParameterSerializer(serializers.Serializer):
    parameter = serializers.CharField()
    code = serializers.CharField()
    value = serializers.FloatField(allow_null=True, help_text="None when missing or stale.")
    score = serializers.IntegerField(allow_null=True, help_text="None when missing or stale.")
    stale = serializers.BooleanField()


class News2ScoreSerializer(serializers.Serializer):
    observed_at = serializers.DateTimeField(help_text="Time of the newest reading scored.")
    total = serializers.IntegerField(help_text="A lower bound when incomplete.")
    complete = serializers.BooleanField(help_text="All seven parameters present and fresh.")
    scale = serializers.IntegerField(help_text="SpO2 scale: 1, or 2 (hypercapnic target).")
    risk = serializers.ChoiceField(choices=[(risk.value, risk.value) for risk in Risk])
    parameters = News2ParameterSerializer(many=True)


class News2FilterSerializer(serializers.Serializer):
    def get_fields(self) -> dict[str, Any]:
        return range_fields(super().get_fields())

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return range_validate(attrs)


class PatientNews2Api(RecordsApi):
    pagination_class = PagePagination
    audit_action = "api.news2.list"

    @extend_schema(
        tags=["patients"],
        summary="A patient's NEWS2 history, newest first",
        parameters=[public_id_parameter(Example.PATIENT), News2FilterSerializer],
        responses={200: News2ScoreSerializer(many=True), **errors(400, 404)},
        examples=[
            OpenApiExample(
                "NEWS2 5",
                value={
                    "observed_at": "2026-11-21T10:00:00Z",
                    "total": 5,
                    "complete": True,
                    "scale": 1,
                    "risk": "medium",
                    "parameters": [
                        {
                            "parameter": "respiratory_rate",
                            "code": "9279-1",
                            "value": 24.0,
                            "score": 2,
                            "stale": False,
                        }
                    ],
                },
            )
        ],
    )
    def get(self, request: Request, id: str) -> Response:
        patient = visible_or_404(
            patients_visible_to(user=request.user), public_id=public_id_or_404(id)
        )
        filters = self.filters(News2FilterSerializer)
        scores = News2Score.objects.filter(patient=patient)
        if "from" in filters:
            scores = scores.filter(observed_at__gte=filters["from"])
        if "to" in filters:
            scores = scores.filter(observed_at__lt=filters["to"])
        return self.paginated(
            scores.order_by("-observed_at", "-pk"),
            News2ScoreSerializer,
            patient_of=lambda score: score.patient_id,
        )
