"""The administrators' admin for wards, beds, ward access, patients and admissions.

Admissions are never edited here: they change only through ``patients.services`` (the admit,
transfer and discharge actions on the patient list), so the invariants and the readable
refusals live in one place.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Count, Exists, OuterRef, QuerySet, Subquery
from django.forms import ModelForm
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from patients.api_access import api_token_issue, api_token_revoke
from patients.forms import BedChoiceForm
from patients.models import AccessLog, Admission, ApiToken, Bed, Patient, Ward, WardAccess
from patients.selectors import open_admission_subquery
from patients.services import (
    AdmissionRefused,
    admission_create,
    admission_discharge,
    admission_transfer,
)

# Set by the intermediate pages' submit buttons: the action then acts instead of asking.
CONFIRMED = "apply"


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """Records kept as evidence: viewable in the admin, never added, edited or deleted there."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _open_admissions() -> QuerySet[Admission]:
    return Admission.objects.filter(discharged_at__isnull=True)


def _bed_open_admission_subquery(*, field: str) -> Subquery:
    """Like ``open_admission_subquery``, over Bed rows: ``field`` of the bed's open admission."""
    return Subquery(_open_admissions().filter(bed=OuterRef("pk")).values(field)[:1])


# Wards, beds and ward access ------------------------------------------------------------------


class BedInline(admin.TabularInline):
    model = Bed
    fields = ["label"]
    ordering = ["label"]
    extra = 0


class WardAccessInline(admin.TabularInline):
    model = WardAccess
    fields = ["user", "granted_by", "granted_at"]
    readonly_fields = ["granted_by", "granted_at"]
    # A hospital has thousands of user accounts; a select would load them all.
    autocomplete_fields = ["user"]
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[WardAccess]:
        return super().get_queryset(request).select_related("user", "granted_by")


def _record_grantor(*, request: HttpRequest, access: WardAccess) -> None:
    # A grant is a clinical-governance record: whoever saves it answers for it.
    access.granted_by = request.user  # type: ignore[assignment]


@admin.register(Ward)
class WardAdmin(admin.ModelAdmin):
    list_display = ["code", "name", "bed_count"]
    search_fields = ["code", "name"]
    inlines = [BedInline, WardAccessInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Ward]:
        return super().get_queryset(request).annotate(bed_count=Count("beds"))

    @admin.display(description="Beds", ordering="bed_count")
    def bed_count(self, ward: Ward) -> int:
        return ward.bed_count  # type: ignore[attr-defined]

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseInlineFormSet, change: bool
    ) -> None:
        if formset.model is not WardAccess:
            super().save_formset(request, form, formset, change)
            return
        # save(commit=False) returns only the new and changed grants: those get a grantor.
        for access in formset.save(commit=False):
            _record_grantor(request=request, access=access)
            access.save()
        for access in formset.deleted_objects:
            access.delete()
        formset.save_m2m()


@admin.register(Bed)
class BedAdmin(admin.ModelAdmin):
    list_display = ["label", "ward", "occupant_mrn"]
    list_filter = ["ward"]
    # Also what the device form's bed autocomplete searches ("icu b3" matches ward and label).
    search_fields = ["label", "ward__code"]
    list_select_related = ["ward"]
    fields = ["ward", "label", "public_id"]
    readonly_fields = ["public_id"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Bed]:
        # select_related here, not only list_select_related: the autocomplete view renders
        # str(bed), which reads the ward, from this queryset.
        return (
            super()
            .get_queryset(request)
            .select_related("ward")
            .annotate(occupant_mrn=_bed_open_admission_subquery(field="patient__mrn"))
        )

    @admin.display(description="Current patient (MRN)", ordering="occupant_mrn")
    def occupant_mrn(self, bed: Bed) -> str | None:
        return bed.occupant_mrn  # type: ignore[attr-defined]


@admin.register(WardAccess)
class WardAccessAdmin(admin.ModelAdmin):
    list_display = ["user", "ward", "granted_by", "granted_at"]
    list_filter = ["ward"]
    search_fields = ["user__username", "user__first_name", "user__last_name"]
    list_select_related = ["user", "ward", "granted_by"]
    fields = ["user", "ward", "granted_by", "granted_at"]
    readonly_fields = ["granted_by", "granted_at"]
    autocomplete_fields = ["user"]

    def save_model(
        self, request: HttpRequest, obj: WardAccess, form: ModelForm, change: bool
    ) -> None:
        if not change or form.changed_data:
            _record_grantor(request=request, access=obj)
        super().save_model(request, obj, form, change)


# Patients -------------------------------------------------------------------------------------


class CurrentWardFilter(admin.SimpleListFilter):
    """The ward of the patient's open admission (a patient not admitted is in no ward)."""

    title = "current ward"
    parameter_name = "ward"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            (code, f"{code} – {name}") for code, name in Ward.objects.values_list("code", "name")
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Patient]) -> QuerySet[Patient]:
        if self.value() is None:
            return queryset
        in_ward = _open_admissions().filter(patient=OuterRef("pk"), bed__ward__code=self.value())
        return queryset.filter(Exists(in_ward))


class AdmittedFilter(admin.SimpleListFilter):
    title = "admission"
    parameter_name = "admitted"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Currently admitted"), ("no", "Not admitted")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Patient]) -> QuerySet[Patient]:
        admitted = Exists(_open_admissions().filter(patient=OuterRef("pk")))
        if self.value() == "yes":
            return queryset.filter(admitted)
        if self.value() == "no":
            return queryset.filter(~admitted)
        return queryset


class AdmissionInline(admin.TabularInline):
    """The patient's stays, read-only: they change only through the actions (the services)."""

    model = Admission
    readonly_fields = fields = ("bed", "admitted_at", "discharged_at", "end_reason")
    ordering = ["-admitted_at"]
    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Admission]:
        return super().get_queryset(request).select_related("bed__ward")

    def has_add_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Patient | None = None) -> bool:
        return False


@admin.register(Patient)
class PatientAdmin(admin.ModelAdmin):
    list_display = [
        "mrn",
        "family_name",
        "given_name",
        "date_of_birth",
        "current_ward",
        "current_bed",
    ]
    # Prefix searches, so MariaDB can use the unique MRN index and the name index.
    search_fields = ["^mrn", "^family_name", "^given_name"]
    list_filter = [CurrentWardFilter, AdmittedFilter]
    fields = ["mrn", "family_name", "given_name", "date_of_birth", "sex", "public_id"]
    readonly_fields = ["public_id"]
    inlines = [AdmissionInline]
    actions = ["admit", "transfer", "discharge"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Patient]:
        # Subqueries, not a join or a per-row lookup: one query however many patients are listed.
        return (
            super()
            .get_queryset(request)
            .annotate(
                current_ward_code=open_admission_subquery(field="bed__ward__code"),
                current_bed_label=open_admission_subquery(field="bed__label"),
            )
        )

    @admin.display(description="Ward", ordering="current_ward_code")
    def current_ward(self, patient: Patient) -> str | None:
        return patient.current_ward_code  # type: ignore[attr-defined]

    @admin.display(description="Bed", ordering="current_bed_label")
    def current_bed(self, patient: Patient) -> str | None:
        return patient.current_bed_label  # type: ignore[attr-defined]

    def has_manage_admissions_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perms(["patients.add_admission", "patients.change_admission"])

    # Actions. Each calls one service; a refusal is shown as the service worded it.

    @admin.action(
        description="Admit the selected patient to a bed…", permissions=["manage_admissions"]
    )
    def admit(self, request: HttpRequest, queryset: QuerySet[Patient]) -> TemplateResponse | None:
        patient = self._the_one_selected(request, queryset, verb="Admitting")
        if patient is None:
            return None
        form = BedChoiceForm(request.POST if CONFIRMED in request.POST else None)
        if not form.is_valid():
            return self._bed_choice_page(
                request, patient=patient, form=form, action="admit", admission=None
            )
        bed = form.cleaned_data["bed"]
        try:
            admission_create(patient=patient, bed=bed)
        except AdmissionRefused as refused:
            self.message_user(request, refused.detail, messages.ERROR)
            return None
        self.log_change(request, patient, f"Admitted to bed {bed}.")
        self.message_user(
            request, f"Patient {patient.mrn} admitted to bed {bed}.", messages.SUCCESS
        )
        return None

    @admin.action(
        description="Transfer the selected patient to another bed…",
        permissions=["manage_admissions"],
    )
    def transfer(
        self, request: HttpRequest, queryset: QuerySet[Patient]
    ) -> TemplateResponse | None:
        patient = self._the_one_selected(request, queryset, verb="Transferring")
        if patient is None:
            return None
        admission = (
            _open_admissions()
            .filter(patient=patient)
            .select_related("patient", "bed__ward")
            .first()
        )
        if admission is None:
            self.message_user(
                request,
                f"Patient {patient.mrn} is not admitted, so cannot be transferred; admit them "
                "instead.",
                messages.ERROR,
            )
            return None
        form = BedChoiceForm(request.POST if CONFIRMED in request.POST else None)
        if not form.is_valid():
            return self._bed_choice_page(
                request, patient=patient, form=form, action="transfer", admission=admission
            )
        from_bed, to_bed = admission.bed, form.cleaned_data["bed"]
        try:
            admission_transfer(admission=admission, to_bed=to_bed)
        except AdmissionRefused as refused:
            self.message_user(request, refused.detail, messages.ERROR)
            return None
        self.log_change(request, patient, f"Transferred from bed {from_bed} to bed {to_bed}.")
        self.message_user(
            request,
            f"Patient {patient.mrn} transferred from bed {from_bed} to bed {to_bed}.",
            messages.SUCCESS,
        )
        return None

    @admin.action(description="Discharge the selected patients…", permissions=["manage_admissions"])
    def discharge(
        self, request: HttpRequest, queryset: QuerySet[Patient]
    ) -> TemplateResponse | None:
        admissions = list(
            _open_admissions()
            .filter(patient__in=queryset.values("pk"))
            .select_related("patient", "bed__ward")
            .order_by("bed__ward__code", "bed__label")
        )
        if not admissions:
            self.message_user(request, "None of the selected patients is admitted.", messages.ERROR)
            return None
        # A discharge cannot be undone and detaches the bed's further readings from the
        # patient, so it is confirmed on a page that names every patient and bed.
        if CONFIRMED not in request.POST:
            return self._discharge_confirmation_page(request, admissions=admissions)
        discharged = 0
        for admission in admissions:
            try:
                admission_discharge(admission=admission)
            except AdmissionRefused as refused:
                self.message_user(
                    request, f"Patient {admission.patient.mrn}: {refused.detail}", messages.ERROR
                )
                continue
            discharged += 1
            self.log_change(request, admission.patient, f"Discharged from bed {admission.bed}.")
        if discharged:
            self.message_user(
                request,
                f"Discharged {discharged} patient{'s' if discharged != 1 else ''}.",
                messages.SUCCESS,
            )
        return None

    def _the_one_selected(
        self, request: HttpRequest, queryset: QuerySet[Patient], *, verb: str
    ) -> Patient | None:
        # Two rows are enough to know "more than one", even with "select all 10,000".
        selected = list(queryset[:2])
        if len(selected) != 1:
            self.message_user(
                request,
                f"{verb} acts on exactly one patient: select only that patient and try again.",
                messages.ERROR,
            )
            return None
        return selected[0]

    def _action_context(self, request: HttpRequest, *, title: str) -> dict[str, Any]:
        request.current_app = self.admin_site.name
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "media": self.media,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "confirmed_name": CONFIRMED,
        }

    def _bed_choice_page(
        self,
        request: HttpRequest,
        *,
        patient: Patient,
        form: BedChoiceForm,
        action: str,
        admission: Admission | None,
    ) -> TemplateResponse:
        verb = "Admit" if action == "admit" else "Transfer"
        context = {
            **self._action_context(request, title=f"{verb} patient {patient.mrn}"),
            "patient": patient,
            "admission": admission,
            "form": form,
            "action": action,
            "verb": verb,
        }
        return TemplateResponse(request, "admin/patients/patient/choose_bed.html", context)

    def _discharge_confirmation_page(
        self, request: HttpRequest, *, admissions: list[Admission]
    ) -> TemplateResponse:
        context = {
            **self._action_context(request, title="Discharge patients"),
            "admissions": admissions,
            "action": "discharge",
        }
        return TemplateResponse(
            request, "admin/patients/patient/discharge_confirmation.html", context
        )


# Admissions -----------------------------------------------------------------------------------


class AdmissionStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("open", "Open (patient in the bed)"), ("closed", "Closed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Admission]) -> QuerySet[Admission]:
        if self.value() == "open":
            return queryset.filter(discharged_at__isnull=True)
        if self.value() == "closed":
            return queryset.filter(discharged_at__isnull=False)
        return queryset


@admin.register(Admission)
class AdmissionAdmin(ReadOnlyModelAdmin):
    """Read-only: admissions change only through the patient actions (the services)."""

    list_display = ["patient", "bed", "admitted_at", "discharged_at", "end_reason"]
    list_filter = [AdmissionStateFilter, ("bed__ward", admin.RelatedFieldListFilter)]
    search_fields = ["^patient__mrn"]
    list_select_related = ["patient", "bed__ward"]
    # Admissions only accumulate; a second COUNT(*) over all of them buys nothing.
    show_full_result_count = False
    readonly_fields = fields = (
        "public_id",
        "patient",
        "bed",
        "admitted_at",
        "discharged_at",
        "end_reason",
    )
    # Should editing ever be allowed, a select would load every patient and bed.
    raw_id_fields = ["patient", "bed"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Admission]:
        # The read-only change page renders str(bed), which reads the ward.
        return super().get_queryset(request).select_related("patient", "bed__ward")


_ACCESS_LOG_COLUMNS = ("at", "user", "token", "patient", "action", "address", "request_id")


@admin.register(AccessLog)
class AccessLogAdmin(ReadOnlyModelAdmin):
    """Who read which patient's records, when, from where: browsable, never editable."""

    list_display = _ACCESS_LOG_COLUMNS
    list_filter = ["action", ("user", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["=patient__mrn", "=user__username", "=request_id"]
    list_select_related = ["user", "token", "patient"]
    show_full_result_count = False
    ordering = ["-at", "-pk"]
    sortable_by = ()
    raw_id_fields = ["user", "token", "patient"]
    readonly_fields = fields = (*_ACCESS_LOG_COLUMNS, "resource")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """API tokens for other systems: issued by an action that shows the token once."""

    list_display = ["name", "user", "scopes", "hint", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "=user__username"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    readonly_fields = ["hint", "created_at", "last_used_at", "revoked_at"]
    fields = ["name", "user", "scopes", "expires_at", *readonly_fields]
    actions = ["revoke_tokens"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        # Issued through the service, so the plain token exists only in this response.
        token, plain = api_token_issue(user=obj.user, name=obj.name, scopes=list(obj.scopes))
        token.expires_at = obj.expires_at
        token.save(update_fields=["expires_at"])
        obj.pk, obj.digest, obj.hint = token.pk, token.digest, token.hint
        # On the request, not the (shared) ModelAdmin: the token belongs to this response only.
        request.issued_api_token = plain  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: Any = None
    ) -> Any:
        response = TemplateResponse(
            request,
            "admin/patients/apitoken/issued.html",
            {
                **self.admin_site.each_context(request),
                "token": obj,
                "plain": request.issued_api_token,  # type: ignore[attr-defined]
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke selected API tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        for token in queryset:
            api_token_revoke(token=token)
        messages.success(request, f"Revoked {queryset.count()} token(s).")
