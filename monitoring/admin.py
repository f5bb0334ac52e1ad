"""The administrators' admin for bedside devices (and their API tokens) and observations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from monitoring.models import Device, IngestMessage, Observation
from monitoring.services import device_token_issue, device_token_revoke
from patients.admin import ReadOnlyModelAdmin


@dataclass(frozen=True, slots=True)
class IssuedToken:
    device: Device
    token: str


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = [
        "serial",
        "manufacturer",
        "model",
        "bed",
        "active",
        "last_seen_at",
        "api_token",
    ]
    list_filter = ["active", ("bed__ward", admin.RelatedFieldListFilter)]
    search_fields = ["serial"]
    list_select_related = ["bed__ward"]
    # token_digest is deliberately absent: not even the digest of a credential is shown.
    fields = [
        "serial",
        "manufacturer",
        "model",
        "bed",
        "active",
        "last_seen_at",
        "token_hint",
        "token_issued_at",
        "public_id",
        "created_at",
    ]
    readonly_fields = ["last_seen_at", "token_hint", "token_issued_at", "public_id", "created_at"]
    # A hospital has thousands of beds; a select would load every one (and its ward).
    autocomplete_fields = ["bed"]
    actions = ["issue_token", "revoke_token"]

    @admin.display(description="API token")
    def api_token(self, device: Device) -> str:
        return f"{device.token_hint}…" if device.has_token else "none"

    @admin.action(description="Issue / rotate API token", permissions=["change"])
    def issue_token(self, request: HttpRequest, queryset: QuerySet[Device]) -> TemplateResponse:
        # All or nothing: a device whose token was rotated but never shown would be locked out
        # with nobody knowing its new token.
        with transaction.atomic():
            issued = [
                IssuedToken(device=device, token=device_token_issue(device=device))
                for device in queryset.select_related("bed__ward").order_by("serial")
            ]
            for entry in issued:
                self.log_change(request, entry.device, "Issued a new API token.")
        # The tokens go into this one response only: never into django messages (kept in the
        # session or a cookie), never into a log line, never into a URL.
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": "New API tokens",
            "opts": self.opts,
            "issued": issued,
        }
        response = TemplateResponse(request, "admin/monitoring/device/issued_tokens.html", context)
        # Neither the browser nor a proxy may keep a copy of the page to show again.
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke API token", permissions=["change"])
    def revoke_token(self, request: HttpRequest, queryset: QuerySet[Device]) -> None:
        revoked = 0
        with transaction.atomic():
            for device in queryset.filter(token_digest__isnull=False):
                device_token_revoke(device=device)
                self.log_change(request, device, "Revoked its API token.")
                revoked += 1
        if revoked:
            self.message_user(
                request,
                f"Revoked the API token of {revoked} device{'s' if revoked != 1 else ''}; "
                "they can no longer post readings.",
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request, "None of the selected devices had a token.", messages.WARNING
            )


class UnassignedFilter(admin.SimpleListFilter):
    """Readings kept without a patient: the device had no bed, or its bed no admitted patient."""

    title = "patient"
    parameter_name = "unassigned"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Unassigned (no patient)"), ("no", "Assigned to a patient")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[Observation]
    ) -> QuerySet[Observation]:
        if self.value() == "yes":
            return queryset.filter(patient__isnull=True)
        if self.value() == "no":
            return queryset.filter(patient__isnull=False)
        return queryset


_OBSERVATION_COLUMNS = (
    "device",
    "patient",
    "code",
    "value",
    "unit",
    "observed_at",
    "received_at",
    "artifact",
)


@admin.register(Observation)
class ObservationAdmin(ReadOnlyModelAdmin):
    """Read-only: readings arrive from devices and are clinical records, never edited.

    The table grows by millions of rows, so: no date_hierarchy (it runs a MIN/MAX and a
    date-grouping query over the whole table), no second full COUNT(*), newest rows by primary
    key, and no sortable columns (each would be a filesort of the whole table).
    """

    list_display = _OBSERVATION_COLUMNS
    list_filter = ["code", UnassignedFilter, "artifact"]
    list_select_related = ["device", "patient"]
    show_full_result_count = False
    ordering = ["-pk"]
    sortable_by = ()
    readonly_fields = fields = (*_OBSERVATION_COLUMNS, "message")
    raw_id_fields = ["device", "patient", "message"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Observation]:
        # Also serves the read-only detail page, which renders the device and the patient.
        return super().get_queryset(request).select_related("device", "patient")


class EvaluationPendingFilter(admin.SimpleListFilter):
    title = "alert evaluation"
    parameter_name = "evaluated"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("no", "Not yet evaluated"), ("yes", "Evaluated")]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[IngestMessage]
    ) -> QuerySet[IngestMessage]:
        if self.value() == "no":
            return queryset.filter(evaluated_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(evaluated_at__isnull=False)
        return queryset


_INGEST_MESSAGE_COLUMNS = (
    "device",
    "message_id",
    "observation_count",
    "received_at",
    "evaluated_at",
)


@admin.register(IngestMessage)
class IngestMessageAdmin(ReadOnlyModelAdmin):
    """Read-only: what each device sent and was told; "not yet evaluated" is the catch-up queue."""

    list_display = _INGEST_MESSAGE_COLUMNS
    list_filter = [EvaluationPendingFilter]
    search_fields = ["=device__serial", "=message_id"]
    list_select_related = ["device"]
    show_full_result_count = False
    ordering = ["-pk"]
    sortable_by = ()
    readonly_fields = fields = (*_INGEST_MESSAGE_COLUMNS, "body_digest", "response")
