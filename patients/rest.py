"""Records API: wards, beds, patients and admissions (``/api/v1/``).

Thin views over ``patients.selectors`` (every queryset scoped to the caller) and
``patients.services`` (admit, transfer, discharge; their refusals answer 409).
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from config.api_errors import Conflict
from config.openapi import Example, errors, public_id_parameter, ward_code_parameter
from patients.api_access import IsAdministrator, ReadForAllWriteForAdministrators, TokenScopes
from patients.models import Admission, Patient
from patients.rest_base import (
    PagePagination,
    PublicIdField,
    RecordsApi,
    public_id_or_404,
    visible_or_404,
)
from patients.selectors import (
    admissions_visible_to,
    beds_visible_to,
    open_admission_subquery,
    patients_visible_to,
    wards_visible_to,
)
from patients.services import (
    AdmissionRefused,
    admission_create,
    admission_discharge,
    admission_transfer,
)

ADMINISTRATORS = [IsAdministrator, TokenScopes]


# Wards and beds


class WardSerializer(serializers.Serializer):
    code = serializers.SlugField(help_text="The ward's public identifier.")
    name = serializers.CharField()
    escalation_seconds = serializers.IntegerField(
        help_text="An unacknowledged high-priority alert escalates after this long."
    )


_WARD_EXAMPLE = OpenApiExample(
    "ward", value={"code": "amu", "name": "Acute Medical Unit", "escalation_seconds": 60}
)


class WardListApi(RecordsApi):
    pagination_class = PagePagination

    @extend_schema(
        tags=["wards"],
        summary="The wards the caller may see",
        responses={200: WardSerializer(many=True), **errors(404)},
        examples=[_WARD_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        wards = wards_visible_to(user=request.user).order_by("code")
        return self.paginated(wards, WardSerializer)


class WardDetailApi(RecordsApi):
    @extend_schema(
        tags=["wards"],
        summary="One ward, by code",
        parameters=[ward_code_parameter()],
        responses={200: WardSerializer, **errors(404)},
        examples=[_WARD_EXAMPLE],
    )
    def get(self, request: Request, code: str) -> Response:
        ward = visible_or_404(wards_visible_to(user=request.user), code=code)
        return Response(WardSerializer(ward).data)


class BedSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    ward = serializers.SlugField(source="ward.code")
    label = serializers.CharField()  # type: ignore[assignment]  # a field named like a DRF Field attribute


class BedFilterSerializer(serializers.Serializer):
    ward = serializers.SlugField(required=False, max_length=32, help_text="Ward code.")


_BED_EXAMPLE = OpenApiExample("bed", value={"id": Example.BED, "ward": "amu", "label": "3"})


class BedListApi(RecordsApi):
    pagination_class = PagePagination

    @extend_schema(
        tags=["beds"],
        summary="The beds of the wards the caller may see",
        parameters=[BedFilterSerializer],
        responses={200: BedSerializer(many=True), **errors(400, 404)},
        examples=[_BED_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = self.filters(BedFilterSerializer)
        beds = beds_visible_to(user=request.user).select_related("ward")
        if "ward" in filters:
            beds = beds.filter(ward__code=filters["ward"])
        return self.paginated(beds.order_by("ward__code", "label", "pk"), BedSerializer)


class BedDetailApi(RecordsApi):
    @extend_schema(
        tags=["beds"],
        summary="One bed",
        parameters=[public_id_parameter(Example.BED)],
        responses={200: BedSerializer, **errors(404)},
        examples=[_BED_EXAMPLE],
    )
    def get(self, request: Request, id: str) -> Response:
        beds = beds_visible_to(user=request.user).select_related("ward")
        bed = visible_or_404(beds, public_id=public_id_or_404(id))
        return Response(BedSerializer(bed).data)


# Patients


class CurrentStaySerializer(serializers.Serializer):
    admission = serializers.UUIDField(source="current_admission")
    bed = serializers.UUIDField(source="current_bed")
    bed_label = serializers.CharField(source="current_bed_label")
    ward = serializers.SlugField(source="current_ward")


class PatientSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    mrn = serializers.CharField()
    family_name = serializers.CharField()
    given_name = serializers.CharField()
    date_of_birth = serializers.DateField()
    sex = serializers.ChoiceField(choices=Patient.Sex.choices)
    news2_spo2_scale2 = serializers.BooleanField()
    current_stay = serializers.SerializerMethodField()

    @extend_schema_field(CurrentStaySerializer(allow_null=True))
    def get_current_stay(self, patient: Patient) -> dict[str, Any] | None:
        if getattr(patient, "current_admission", None) is None:
            return None
        return dict(CurrentStaySerializer(patient).data)


def _with_current_stay(patients: QuerySet[Patient]) -> QuerySet[Patient]:
    """Each patient's open admission, bed and ward, as columns of the same query."""
    return patients.annotate(
        current_admission=open_admission_subquery(field="public_id"),
        current_bed=open_admission_subquery(field="bed__public_id"),
        current_bed_label=open_admission_subquery(field="bed__label"),
        current_ward=open_admission_subquery(field="bed__ward__code"),
    )


class PatientFilterSerializer(serializers.Serializer):
    mrn = serializers.CharField(
        required=False, max_length=32, help_text="The MRN, or its beginning."
    )
    name = serializers.CharField(
        required=False,
        max_length=100,
        help_text="Each word begins the family or the given name (any case).",
    )
    ward = serializers.SlugField(
        required=False, max_length=32, help_text="Ward code: patients admitted there now."
    )


_PATIENT_EXAMPLE = OpenApiExample(
    "patient",
    value={
        "id": Example.PATIENT,
        "mrn": "MRN0001234",
        "family_name": "Example",
        "given_name": "Alex",
        "date_of_birth": "1950-03-14",
        "sex": "female",
        "news2_spo2_scale2": False,
        "current_stay": {
            "admission": Example.ADMISSION,
            "bed": Example.BED,
            "bed_label": "3",
            "ward": "amu",
        },
    },
)


class PatientListApi(RecordsApi):
    pagination_class = PagePagination
    audit_action = "api.patients.list"

    @extend_schema(
        tags=["patients"],
        summary="Patients admitted to the caller's wards (administrators: every patient)",
        parameters=[PatientFilterSerializer],
        responses={200: PatientSerializer(many=True), **errors(400, 404)},
        examples=[_PATIENT_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = self.filters(PatientFilterSerializer)
        patients = patients_visible_to(user=request.user)
        if "mrn" in filters:
            patients = patients.filter(mrn__startswith=filters["mrn"].strip())
        for word in filters.get("name", "").split():
            patients = patients.filter(
                Q(family_name__istartswith=word) | Q(given_name__istartswith=word)
            )
        if "ward" in filters:
            patients = patients.filter(
                Exists(
                    Admission.objects.filter(
                        patient=OuterRef("pk"),
                        discharged_at__isnull=True,
                        bed__ward__code=filters["ward"],
                    )
                )
            )
        patients = _with_current_stay(patients).order_by("family_name", "given_name", "mrn")
        return self.paginated(patients, PatientSerializer, patient_of=lambda patient: patient.pk)


class PatientDetailApi(RecordsApi):
    audit_action = "api.patients.retrieve"

    @extend_schema(
        tags=["patients"],
        summary="One patient",
        parameters=[public_id_parameter(Example.PATIENT)],
        responses={200: PatientSerializer, **errors(404)},
        examples=[_PATIENT_EXAMPLE],
    )
    def get(self, request: Request, id: str) -> Response:
        patient = visible_or_404(
            _with_current_stay(patients_visible_to(user=request.user)),
            public_id=public_id_or_404(id),
        )
        self.audit(patient_ids=[patient.pk])
        return Response(PatientSerializer(patient).data)


# Admissions


class AdmissionSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="public_id")
    patient = serializers.UUIDField(source="patient.public_id")
    bed = serializers.UUIDField(source="bed.public_id")
    bed_label = serializers.CharField(source="bed.label")
    ward = serializers.SlugField(source="bed.ward.code")
    admitted_at = serializers.DateTimeField()
    discharged_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.ChoiceField(
        choices=Admission.EndReason.choices,
        allow_blank=True,
        help_text="Empty while the admission is open.",
    )
    is_open = serializers.BooleanField()


class AdmissionFilterSerializer(serializers.Serializer):
    patient = serializers.UUIDField(required=False, help_text="Patient public id.")
    ward = serializers.SlugField(required=False, max_length=32, help_text="Ward code.")
    open = serializers.BooleanField(
        required=False, allow_null=True, default=None, help_text="Only open (or closed) ones."
    )


class AdmissionCreateSerializer(serializers.Serializer):
    patient = PublicIdField(visible=patients_visible_to, help_text="Patient public id.")
    bed = PublicIdField(visible=beds_visible_to, help_text="Bed public id.")


class AdmissionTransferSerializer(serializers.Serializer):
    bed = PublicIdField(visible=beds_visible_to, help_text="The bed to move the patient to.")


_ADMISSION = {
    "id": Example.ADMISSION,
    "patient": Example.PATIENT,
    "bed": Example.BED,
    "bed_label": "3",
    "ward": "amu",
    "admitted_at": "2026-11-21T08:30:00Z",
    "discharged_at": None,
    "end_reason": "",
    "is_open": True,
}
_ADMISSION_EXAMPLE = OpenApiExample("open admission", value=_ADMISSION, response_only=True)
_DISCHARGED_EXAMPLE = OpenApiExample(
    "discharged",
    value={
        **_ADMISSION,
        "discharged_at": "2026-11-23T14:05:00Z",
        "end_reason": "discharged",
        "is_open": False,
    },
    response_only=True,
)
_ADMISSION_ROWS = ("patient", "bed__ward")


def _refused(error: AdmissionRefused) -> Conflict:
    return Conflict(error.code, error.detail)


class AdmissionListCreateApi(RecordsApi):
    """GET: admissions of the caller's wards. POST (administrators): admit a patient."""

    pagination_class = PagePagination
    permission_classes = [ReadForAllWriteForAdministrators, TokenScopes]
    audit_action = "api.admissions.list"

    @extend_schema(
        tags=["admissions"],
        summary="Admissions of the caller's wards, open and closed, newest first",
        parameters=[AdmissionFilterSerializer],
        responses={200: AdmissionSerializer(many=True), **errors(400, 404)},
        examples=[_ADMISSION_EXAMPLE],
    )
    def get(self, request: Request) -> Response:
        filters = self.filters(AdmissionFilterSerializer)
        admissions = admissions_visible_to(user=request.user).select_related(*_ADMISSION_ROWS)
        if "patient" in filters:
            admissions = admissions.filter(patient__public_id=filters["patient"])
        if "ward" in filters:
            admissions = admissions.filter(bed__ward__code=filters["ward"])
        if filters.get("open") is not None:
            admissions = admissions.filter(discharged_at__isnull=filters["open"])
        return self.paginated(
            admissions.order_by("-admitted_at", "-pk"),
            AdmissionSerializer,
            patient_of=lambda admission: admission.patient_id,
        )

    @extend_schema(
        tags=["admissions"],
        summary="Admit a patient to a bed (administrators)",
        request=AdmissionCreateSerializer,
        responses={
            201: AdmissionSerializer,
            **errors(
                400,
                409,
                conflict={
                    "code": "patient_already_admitted",
                    "detail": "The patient is already admitted to bed AMU / 3; transfer or "
                    "discharge them first.",
                },
            ),
        },
        examples=[
            OpenApiExample(
                "admit", value={"patient": Example.PATIENT, "bed": Example.BED}, request_only=True
            ),
            _ADMISSION_EXAMPLE,
        ],
    )
    def post(self, request: Request) -> Response:
        given = AdmissionCreateSerializer(data=request.data, context=self.context())
        given.is_valid(raise_exception=True)
        try:
            admission = admission_create(
                patient=given.validated_data["patient"], bed=given.validated_data["bed"]
            )
        except AdmissionRefused as error:
            raise _refused(error) from error
        return Response(AdmissionSerializer(admission).data, status=status.HTTP_201_CREATED)


class AdmissionDetailApi(RecordsApi):
    audit_action = "api.admissions.retrieve"

    @extend_schema(
        tags=["admissions"],
        summary="One admission",
        parameters=[public_id_parameter(Example.ADMISSION)],
        responses={200: AdmissionSerializer, **errors(404)},
        examples=[_ADMISSION_EXAMPLE],
    )
    def get(self, request: Request, id: str) -> Response:
        admission = visible_or_404(
            admissions_visible_to(user=request.user).select_related(*_ADMISSION_ROWS),
            public_id=public_id_or_404(id),
        )
        self.audit(patient_ids=[admission.patient_id])
        return Response(AdmissionSerializer(admission).data)


class AdmissionTransferApi(RecordsApi):
    permission_classes = ADMINISTRATORS

    @extend_schema(
        tags=["admissions"],
        summary="Move an admitted patient to another bed (administrators)",
        description="Closes this admission (end reason: transferred) and opens the next in "
        "the new bed at the same instant; answers the new admission.",
        parameters=[public_id_parameter(Example.ADMISSION)],
        request=AdmissionTransferSerializer,
        responses={
            201: AdmissionSerializer,
            **errors(
                400,
                404,
                409,
                conflict={"code": "same_bed", "detail": "The patient is already in that bed."},
            ),
        },
        examples=[
            OpenApiExample("transfer", value={"bed": Example.BED}, request_only=True),
            _ADMISSION_EXAMPLE,
        ],
    )
    def post(self, request: Request, id: str) -> Response:
        admission = visible_or_404(
            admissions_visible_to(user=request.user).select_related("patient"),
            public_id=public_id_or_404(id),
        )
        given = AdmissionTransferSerializer(data=request.data, context=self.context())
        given.is_valid(raise_exception=True)
        try:
            moved = admission_transfer(admission=admission, to_bed=given.validated_data["bed"])
        except AdmissionRefused as error:
            raise _refused(error) from error
        return Response(AdmissionSerializer(moved).data, status=status.HTTP_201_CREATED)


class AdmissionDischargeApi(RecordsApi):
    permission_classes = ADMINISTRATORS

    @extend_schema(
        tags=["admissions"],
        summary="Discharge a patient (administrators)",
        parameters=[public_id_parameter(Example.ADMISSION)],
        request=None,
        responses={
            200: AdmissionSerializer,
            **errors(
                404,
                409,
                conflict={"code": "not_admitted", "detail": "This admission is already closed."},
            ),
        },
        examples=[_DISCHARGED_EXAMPLE],
    )
    def post(self, request: Request, id: str) -> Response:
        admission = visible_or_404(
            admissions_visible_to(user=request.user), public_id=public_id_or_404(id)
        )
        try:
            closed = admission_discharge(admission=admission)
        except AdmissionRefused as error:
            raise _refused(error) from error
        closed = Admission.objects.select_related(*_ADMISSION_ROWS).get(pk=closed.pk)
        return Response(AdmissionSerializer(closed).data)
