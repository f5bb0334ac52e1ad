"""Records API: devices and their credentials, observations and their trend (``/api/v1/``).

Devices are for administrators only. Observations are read one patient at a time by
clinicians (administrators may also list every reading, including those no patient was
admitted for); the trend is aggregated by MariaDB (``monitoring.selectors.observation_trend``).
Device credentials get nothing here: they are for ``/api/v1/ingest/`` (monitoring/api.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from config.openapi import (
    STAFF_ENTERED_CODES,
    VITAL_CODES,
    Example,
    errors,
    public_id_parameter,
    ward_code_parameter,
)
from monitoring.ingestion import EARLIEST_OBSERVED_AT
from monitoring.models import Device, Observation
from monitoring.selectors import latest_vitals, observation_trend
from monitoring.services import (
    ObservationRefused,
    device_token_issue,
    device_token_revoke,
    observation_enter,
)
from monitoring.vitals import VITALS
from patients.models import Patient
from patients.rest import ADMINISTRATORS
from patients.rest_base import (
    AwareDateTimeField,
    ObservedAtCursorPagination,
    PagePagination,
    PublicIdField,
    RecordsApi,
    public_id_or_404,
    range_fields,
    range_validate,
    visible_or_404,
)
from patients.selectors import (
    patients_visible_to,
    user_sees_all_wards,
    ward_beds_and_patients,
    wards_visible_to,
)

# A trend longer than this many buckets is refused: ask for wider buckets instead.
MAX_TREND_BUCKETS = 5000
DEFAULT_TREND_WINDOW = dt.timedelta(hours=24)


# Devices


class DeviceSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    serial = serializers.CharField()
    manufacturer = serializers.CharField()
    model = serializers.CharField()
    bed = serializers.UUIDField(source="bed.public_id", allow_null=True, default=None)
    ward = serializers.SlugField(source="bed.ward.code", allow_null=True, default=None)
    active = serializers.BooleanField()
    last_seen_at = serializers.DateTimeField(allow_null=True)
    has_token = serializers.BooleanField()
    token_hint = serializers.CharField(help_text="The first characters of the current token.")
    token_issued_at = serializers.DateTimeField(allow_null=True)


class DeviceFilterSerializer(serializers.Serializer):
    ward = serializers.SlugField(required=False, max_length=32, help_text="Ward code.")
    active = serializers.BooleanField(required=False, allow_null=True, default=None)


class DeviceTokenSerializer(serializers.Serializer):
    device = serializers.UUIDField(source="public_id")
    token = serializers.CharField(help_text="Shown once: only its digest is stored.")
    token_hint = serializers.CharField()
    token_issued_at = serializers.DateTimeField()


_DEVICE_EXAMPLE = OpenApiExample(
    "device",
    value={
        "id": Example.DEVICE,
        "serial": "MX450-0042",
        "manufacturer": "Example Medical",
        "model": "MX450",
        "bed": Example.BED,
        "ward": "amu",
        "active": True,
        "last_seen_at": "2026-11-21T10:00:01Z",
        "has_token": True,
        "token_hint": "dev_Qx3f",
        "token_issued_at": "2026-11-01T09:00:00Z",
    },
)


def _devices() -> QuerySet[Device]:
    # Administrators only (the views' permission): every device, with its bed and ward.
    return Device.objects.select_related("bed__ward")


class DeviceListApi(RecordsApi):
    permission_classes = ADMINISTRATORS
    pagination_class = PagePagination

    @extend_schema(
        tags=["devices"],
        summary="Bedside devices (administrators)",
        parameters=[DeviceFilterSerializer],
        responses={200: DeviceSerializer(many=True), **errors(400, 404)},
        examples=[_DEVICE_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = self.filters(DeviceFilterSerializer)
        devices = _devices()
        if "ward" in filters:
            devices = devices.filter(bed__ward__code=filters["ward"])
        if filters.get("active") is not None:
            devices = devices.filter(active=filters["active"])
        return self.paginated(devices.order_by("serial"), DeviceSerializer)


class DeviceDetailApi(RecordsApi):
    permission_classes = ADMINISTRATORS

    @extend_schema(
        tags=["devices"],
        summary="One device (administrators)",
        parameters=[public_id_parameter(Example.DEVICE)],
        responses={200: DeviceSerializer, **errors(404)},
        examples=[_DEVICE_EXAMPLE],
    )
    def get(self, request: Request, id: str) -> Response:
        device = visible_or_404(_devices(), public_id=public_id_or_404(id))
        return Response(DeviceSerializer(device).data)


class DeviceTokenApi(RecordsApi):
    """POST issues (or rotates) the device's token; DELETE revokes it."""

    permission_classes = ADMINISTRATORS

    @extend_schema(
        tags=["devices"],
        summary="Issue or rotate a device's token (administrators)",
        description="Answers the plain token once (`Cache-Control: no-store`); the previous "
        "token stops working at once.",
        parameters=[public_id_parameter(Example.DEVICE)],
        request=None,
        responses={201: DeviceTokenSerializer, **errors(404)},
        examples=[
            OpenApiExample(
                "issued",
                value={
                    "device": Example.DEVICE,
                    "token": "dev_Qx3fJ9k2mW8pL1nR5tV7yB0cD4eF6gH8iK2lM4nO6p",
                    "token_hint": "dev_Qx3f",
                    "token_issued_at": "2026-11-21T10:00:00Z",
                },
            )
        ],
    )
    def post(self, request: Request, id: str) -> Response:
        device = visible_or_404(_devices(), public_id=public_id_or_404(id))
        token = device_token_issue(device=device)
        data = {
            "public_id": device.public_id,
            "token": token,
            "token_hint": device.token_hint,
            "token_issued_at": device.token_issued_at,
        }
        response = Response(DeviceTokenSerializer(data).data, status=status.HTTP_201_CREATED)
        # A credential: no cache, proxy or browser history may keep it.
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response

    @extend_schema(
        tags=["devices"],
        summary="Revoke a device's token (administrators)",
        description="The device is refused at once; revoking a device without a token is a no-op.",
        parameters=[public_id_parameter(Example.DEVICE)],
        request=None,
        responses={204: None, **errors(404)},
    )
    def delete(self, request: Request, id: str) -> Response:
        device = visible_or_404(_devices(), public_id=public_id_or_404(id))
        device_token_revoke(device=device)
        return Response(status=status.HTTP_204_NO_CONTENT)


# Observations


class ObservationSerializer(serializers.Serializer):
    patient = serializers.UUIDField(source="patient.public_id", allow_null=True, default=None)
    code = serializers.ChoiceField(choices=VITAL_CODES)
    value = serializers.FloatField()
    unit = serializers.CharField(help_text="UCUM.")
    observed_at = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    artifact = serializers.BooleanField(
        help_text="Marked unreliable by the device: stored, never alarmed on."
    )
    source = serializers.SerializerMethodField()  # type: ignore[assignment]  # a field named like a DRF Field attribute
    device = serializers.UUIDField(source="device.public_id", allow_null=True, default=None)

    def get_source(self, observation: Observation) -> str:
        return "device" if observation.device_id is not None else "staff"


class ObservationFilterSerializer(serializers.Serializer):
    patient = serializers.UUIDField(
        required=False, help_text="Patient public id (required unless administrator)."
    )
    code = serializers.ChoiceField(choices=VITAL_CODES, required=False)

    def get_fields(self) -> dict[str, Any]:
        return range_fields(super().get_fields())

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return range_validate(attrs)


_OBSERVATION_EXAMPLE = OpenApiExample(
    "heart rate",
    value={
        "patient": Example.PATIENT,
        "code": "8867-4",
        "value": 72.0,
        "unit": "/min",
        "observed_at": "2026-11-21T10:00:00.123000Z",
        "received_at": "2026-11-21T10:00:00.412000Z",
        "artifact": False,
        "source": "device",
        "device": Example.DEVICE,
    },
)


def _patient_for(request: Request, public_id: Any) -> Patient:
    """The patient the caller asked about, among those they may see, else 404."""
    return visible_or_404(patients_visible_to(user=request.user), public_id=public_id)


class ObservationListApi(RecordsApi):
    pagination_class = ObservedAtCursorPagination
    audit_action = "api.observations.list"

    @extend_schema(
        tags=["observations"],
        summary="Readings, newest first (cursor pagination)",
        description="Clinicians name a patient they may see; administrators may leave it "
        "out to read every reading, including those stored without a patient.",
        parameters=[ObservationFilterSerializer],
        responses={200: ObservationSerializer(many=True), **errors(400, 404)},
        examples=[_OBSERVATION_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = self.filters(ObservationFilterSerializer)
        observations = Observation.objects.select_related("patient", "device")
        if "patient" in filters:
            patient = _patient_for(request, filters["patient"])
            observations = observations.filter(patient=patient)
        elif not user_sees_all_wards(user=request.user):
            raise serializers.ValidationError({"patient": ["Name the patient."]})
        if "code" in filters:
            observations = observations.filter(code=filters["code"])
        if "from" in filters:
            observations = observations.filter(observed_at__gte=filters["from"])
        if "to" in filters:
            observations = observations.filter(observed_at__lt=filters["to"])
        return self.paginated(
            observations,
            ObservationSerializer,
            patient_of=lambda observation: observation.patient_id,
        )


class TrendFilterSerializer(serializers.Serializer):
    patient = serializers.UUIDField(help_text="Patient public id.")
    code = serializers.ChoiceField(
        choices=VITAL_CODES, required=False, help_text="Only this vital."
    )
    bucket = serializers.IntegerField(
        default=60, min_value=1, max_value=86400, help_text="Bucket width in seconds."
    )

    def get_fields(self) -> dict[str, Any]:
        fields = range_fields(super().get_fields())
        fields["from"].help_text = "Inclusive; default: 24 hours before 'to'."
        fields["to"].help_text = "Exclusive; default: now."
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = range_validate(attrs)
        attrs.setdefault("to", timezone.now())
        if "from" not in attrs:
            try:
                attrs["from"] = attrs["to"] - DEFAULT_TREND_WINDOW
            except OverflowError:  # a 'to' in the first day of year 1
                raise serializers.ValidationError({"to": ["Give 'from' too."]}) from None
        if attrs["from"] >= attrs["to"]:
            raise serializers.ValidationError({"from": ["'from' must be before 'to'."]})
        buckets = (attrs["to"] - attrs["from"]).total_seconds() / attrs["bucket"]
        if buckets > MAX_TREND_BUCKETS:
            raise serializers.ValidationError(
                {"bucket": [f"At most {MAX_TREND_BUCKETS} buckets: widen them or the range."]}
            )
        return attrs


class TrendPointSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="The bucket's start (aligned on the Unix epoch).")
    min = serializers.FloatField()
    mean = serializers.FloatField()
    max = serializers.FloatField()
    count = serializers.IntegerField()


class TrendSeriesSerializer(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    unit = serializers.CharField()
    points = TrendPointSerializer(many=True)


class TrendSerializer(serializers.Serializer):
    patient = serializers.UUIDField()
    bucket_seconds = serializers.IntegerField()
    series = TrendSeriesSerializer(many=True)

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField()
        fields["to"] = serializers.DateTimeField()
        return fields


class ObservationTrendApi(RecordsApi):
    audit_action = "api.trend.retrieve"

    @extend_schema(
        tags=["observations"],
        summary="A patient's readings per vital in time buckets: min, mean, max, count",
        description="Aggregated by the database; artifact readings are left out.",
        parameters=[TrendFilterSerializer],
        responses={200: TrendSerializer, **errors(400, 404)},
        examples=[
            OpenApiExample(
                "heart rate, hourly",
                value={
                    "patient": Example.PATIENT,
                    "from": "2026-11-21T08:00:00Z",
                    "to": "2026-11-21T10:00:00Z",
                    "bucket_seconds": 3600,
                    "series": [
                        {
                            "code": "8867-4",
                            "name": "Heart rate",
                            "unit": "/min",
                            "points": [
                                {
                                    "at": "2026-11-21T08:00:00Z",
                                    "min": 64.0,
                                    "mean": 71.4,
                                    "max": 88.0,
                                    "count": 3600,
                                },
                                {
                                    "at": "2026-11-21T09:00:00Z",
                                    "min": 66.0,
                                    "mean": 74.9,
                                    "max": 121.0,
                                    "count": 3598,
                                },
                            ],
                        }
                    ],
                },
            )
        ],
    )
    def get(self, request: Request) -> Response:
        filters = self.filters(TrendFilterSerializer)
        patient = _patient_for(request, filters["patient"])
        trend = observation_trend(
            patient_id=patient.pk,
            start=filters["from"],
            end=filters["to"],
            bucket_seconds=filters["bucket"],
            code=filters.get("code"),
        )
        series = [
            {"code": code, "name": VITALS[code].name, "unit": VITALS[code].unit, "points": points}
            for code, points in trend.items()
        ]
        self.audit(patient_ids=[patient.pk])
        data = {
            "patient": patient.public_id,
            "from": filters["from"],
            "to": filters["to"],
            "bucket_seconds": filters["bucket"],
            "series": series,
        }
        return Response(TrendSerializer(data).data)


class StaffObservationSerializer(serializers.Serializer):
    patient = PublicIdField(visible=patients_visible_to, help_text="Patient public id.")
    code = serializers.ChoiceField(choices=STAFF_ENTERED_CODES)
    value = serializers.IntegerField(
        help_text="Air or oxygen: 0 air, 1 supplemental oxygen. ACVPU: 0 Alert, 1 new "
        "Confusion, 2 Voice, 3 Pain, 4 Unresponsive."
    )
    observed_at = AwareDateTimeField(required=False, help_text="Default: now.")

    def validate_observed_at(self, value: dt.datetime) -> dt.datetime:
        if value < EARLIEST_OBSERVED_AT:
            raise serializers.ValidationError("The observation time is before 2020.")
        return value


# Which input field each of the service's refusals is about.
_REFUSED_FIELD = {
    "unknown_code": "code",
    "implausible_value": "value",
    "observed_at_in_future": "observed_at",
}


class StaffObservationCreateApi(RecordsApi):
    @extend_schema(
        tags=["observations"],
        summary="Enter air or oxygen, or ACVPU, for a patient (NEWS2 inputs)",
        description="Clinicians of the patient's ward (and administrators). The next "
        "evaluation of the patient's readings scores it.",
        request=StaffObservationSerializer,
        responses={201: ObservationSerializer, **errors(400)},
        examples=[
            OpenApiExample(
                "on oxygen",
                value={
                    "patient": Example.PATIENT,
                    "code": "local-supplemental-o2",
                    "value": 1,
                    "observed_at": "2026-11-20T22:05:00Z",
                },
                request_only=True,
            ),
            OpenApiExample(
                "recorded",
                value={
                    "patient": Example.PATIENT,
                    "code": "local-supplemental-o2",
                    "value": 1.0,
                    "unit": "{boolean}",
                    "observed_at": "2026-11-20T22:05:00Z",
                    "received_at": "2026-11-20T22:05:02Z",
                    "artifact": False,
                    "source": "staff",
                    "device": None,
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        given = StaffObservationSerializer(data=request.data, context=self.context())
        given.is_valid(raise_exception=True)
        try:
            observation = observation_enter(
                patient=given.validated_data["patient"],
                code=given.validated_data["code"],
                value=given.validated_data["value"],
                user=request.user,
                observed_at=given.validated_data.get("observed_at"),
            )
        except ObservationRefused as error:
            field = _REFUSED_FIELD.get(error.code, "non_field")
            raise serializers.ValidationError({field: [error.detail]}) from error
        return Response(ObservationSerializer(observation).data, status=status.HTTP_201_CREATED)


class LatestVitalSerializer(serializers.Serializer):
    value = serializers.FloatField()
    unit = serializers.CharField()
    observed_at = serializers.DateTimeField()
    artifact = serializers.BooleanField()


class BedLatestVitalsSerializer(serializers.Serializer):
    bed = serializers.UUIDField(help_text="Bed public id.")
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like a DRF Field attribute
    patient = serializers.UUIDField(allow_null=True, help_text="Admitted patient's public id.")
    vitals = serializers.DictField(
        child=LatestVitalSerializer(), help_text="By LOINC code: the newest reading."
    )


class WardLatestVitalsSerializer(serializers.Serializer):
    ward = serializers.SlugField()
    beds = BedLatestVitalsSerializer(many=True)


class WardLatestVitalsApi(RecordsApi):
    audit_action = "api.latest_vitals.retrieve"

    @extend_schema(
        tags=["observations"],
        summary="The newest reading of each vital for every bed of a ward",
        description="Two index-only queries whatever the ward's size (a loose index scan of "
        "(patient, code, observed_at) for the newest time, then those rows).",
        parameters=[ward_code_parameter()],
        responses={200: WardLatestVitalsSerializer, **errors(404)},
        examples=[
            OpenApiExample(
                "one bed",
                value={
                    "ward": "amu",
                    "beds": [
                        {
                            "bed": Example.BED,
                            "label": "Bed 01",
                            "patient": Example.PATIENT,
                            "vitals": {
                                "8867-4": {
                                    "value": 72.0,
                                    "unit": "/min",
                                    "observed_at": "2026-11-21T10:00:00Z",
                                    "artifact": False,
                                }
                            },
                        }
                    ],
                },
            )
        ],
    )
    def get(self, request: Request, code: str) -> Response:
        ward = visible_or_404(wards_visible_to(user=request.user), code=code)
        beds, patients = ward_beds_and_patients(ward=ward)
        vitals = latest_vitals(patient_ids=[p.pk for p in patients.values()])
        self.audit(patient_ids=[p.pk for p in patients.values()])
        data = {
            "ward": ward.code,
            "beds": [
                {
                    "bed": bed.public_id,
                    "label": bed.label,
                    "patient": patients[bed.pk].public_id if bed.pk in patients else None,
                    "vitals": vitals.get(patients[bed.pk].pk, {}) if bed.pk in patients else {},
                }
                for bed in beds
            ],
        }
        return Response(WardLatestVitalsSerializer(data).data)
